#pragma once
// Umbrella header of trellis: Trellis Networks on Kokkos.
#include <trellis/activation.hpp>
#include <trellis/blas.hpp>
#include <trellis/dropout.hpp>
#include <trellis/errors.hpp>
#include <trellis/parameters.hpp>
#include <trellis/recurrent.hpp>
#include <trellis/shape.hpp>
#include <trellis/structure.hpp>
#include <trellis/tensor_io.hpp>
#include <trellis/rnn_sparse.hpp>
#include <trellis/safetensors.hpp>
#include <trellis/trellis_network.hpp>
#include <trellis/version.hpp>
#include <trellis/weight_tying.hpp>

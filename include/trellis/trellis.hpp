#pragma once
// Umbrella header of trellis: Trellis Networks on Kokkos, layer by layer. The data
// set readers (trellis/data/image_sets.hpp, idx.hpp) are not included: they are the
// Trellis::data target, which links zlib; nor is trellis/mpi/ (the Trellis::mpi
// target, which links MPI).
#include <trellis/errors.hpp>
#include <trellis/runtime.hpp>
#include <trellis/version.hpp>

// blas: the GEMM entry and its back ends
#include <trellis/blas/gemm.hpp>

// core: the TrellisNet
#include <trellis/core/activation.hpp>
#include <trellis/core/dropout_key.hpp>
#include <trellis/core/masks.hpp>
#include <trellis/core/network.hpp>
#include <trellis/core/parameters.hpp>
#include <trellis/core/recurrent.hpp>
#include <trellis/core/rnn_sparse.hpp>
#include <trellis/core/shape.hpp>
#include <trellis/core/stream.hpp>
#include <trellis/core/structure.hpp>
#include <trellis/core/weight_tying.hpp>

// nn: layers and models around the core
#include <trellis/nn/cross_entropy.hpp>
#include <trellis/nn/dropout.hpp>
#include <trellis/nn/embedding.hpp>
#include <trellis/nn/language_model.hpp>
#include <trellis/nn/language_model_stream.hpp>
#include <trellis/nn/linear.hpp>
#include <trellis/nn/mixture_of_softmaxes.hpp>
#include <trellis/nn/parameter_list.hpp>
#include <trellis/nn/sampling.hpp>
#include <trellis/nn/sequence_classifier.hpp>

// io: files in the reference's names and layouts
#include <trellis/io/core_file.hpp>
#include <trellis/io/model_files.hpp>
#include <trellis/io/run_model.hpp>
#include <trellis/io/safetensors.hpp>
#include <trellis/io/tensor_io.hpp>
#include <trellis/io/text_generation.hpp>
#include <trellis/io/torch_layout.hpp>

// train: optimisers, schedules, tasks and the trainer
#include <trellis/train/classifier_task.hpp>
#include <trellis/train/communicator.hpp>
#include <trellis/train/flags.hpp>
#include <trellis/train/gradient_reducer.hpp>
#include <trellis/train/language_task.hpp>
#include <trellis/train/optimizers.hpp>
#include <trellis/train/run_directory.hpp>
#include <trellis/train/schedule.hpp>
#include <trellis/train/step_result.hpp>
#include <trellis/train/stop_signals.hpp>
#include <trellis/train/trainer.hpp>

// The safetensors reader on arbitrary bytes: header and data.
#include <trellis/io/safetensors.hpp>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
  auto const path = trellis::fuzz::write_file("input.safetensors", data, size);
  trellis::fuzz::expect_clear_errors([&] {
    auto const file = trellis::safetensors::read(path);
    for (auto const& [name, tensor] : file.tensors) (void)tensor.to_double();
  });
  return 0;
}

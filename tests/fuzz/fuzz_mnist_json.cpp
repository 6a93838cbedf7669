// The reader of the MNIST package's JSON digit files on arbitrary bytes.
#include <trellis/data/image_sets.hpp>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
  auto const path = trellis::fuzz::write_file("digits.json", data, size);
  trellis::fuzz::expect_clear_errors([&] { (void)trellis::data::detail::read_digit_file(path, 1); });
  return 0;
}

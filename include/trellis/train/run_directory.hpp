#pragma once
// A training run's directory: log.txt (appended line by line), curves.csv (one row per
// CurveRow, rewritten whole through a temporary file and a rename, so that a reader
// never sees half a file) and the checkpoint's path. The trellis program's run
// directories are these.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <trellis/errors.hpp>
#include <trellis/train/trainer.hpp>

namespace trellis {

class RunDirectory {
 public:
  /// Creates `dir` if needed; a directory that cannot be made or written is an error.
  explicit RunDirectory(std::string dir) : dir_(std::move(dir)) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (!fs::is_directory(dir_))
      throw file_error(dir_ + ": cannot create the run directory" + (ec ? " (" + ec.message() + ")" : ""));
    std::string const probe = path(".write-test");
    {
      std::ofstream out(probe);
      if (!out || !(out << "ok") || !out.flush()) throw file_error(dir_ + ": the run directory is not writable");
    }
    fs::remove(probe, ec);
    log_.open(path("log.txt"), std::ios::app);
    if (!log_) throw file_error(path("log.txt") + ": cannot open for appending");
  }

  std::string path(std::string const& name) const { return dir_ + "/" + name; }
  std::string checkpoint_path() const { return path("checkpoint.safetensors"); }

  /// One line of log.txt, on disk when this returns.
  void log(std::string const& line) {
    log_ << line << '\n';
    log_.flush();
  }

  /// A row for curves.csv; on disk at the next write_curves.
  void add_curve_row(CurveRow const& r) {
    std::ostringstream row;
    row << r.step << ',' << r.epoch << ',' << r.trained_minutes << ',' << r.lr << ',';
    // Full precision: resumed runs are compared with uninterrupted ones bit for bit.
    if (!std::isnan(r.train_loss))
      row << std::setprecision(17) << r.train_loss << ',' << std::setprecision(6) << r.train_metric;
    else
      row << ',';
    row << ',';
    if (!std::isnan(r.valid)) row << r.valid;
    curve_rows_.push_back(row.str());
  }

  /// The rows of an earlier session of this run (resuming).
  void load_curves() {
    std::ifstream in(path("curves.csv"));
    std::string line;
    bool header = true;
    while (std::getline(in, line)) {
      if (header) {
        header = false;
        continue;
      }
      if (!line.empty()) curve_rows_.push_back(line);
    }
  }

  /// Replaces curves.csv with every row so far; `metric` names the train and valid columns.
  void write_curves(std::string const& metric) {
    std::string const tmp = path("curves.csv.tmp");
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << "step,epoch,train_minutes,lr,train_loss,train_" << metric << ",valid_" << metric << "\n";
      for (auto const& r : curve_rows_) out << r << "\n";
      if (!out.flush()) throw file_error(tmp + ": writing failed");
    }
    std::filesystem::rename(tmp, path("curves.csv"));
  }

 private:
  std::string dir_;
  std::ofstream log_;
  std::vector<std::string> curve_rows_;
};

}  // namespace trellis

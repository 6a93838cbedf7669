#pragma once
// A training run's directory: log.txt (appended line by line), curves.csv (one row per
// CurveRow, rewritten whole through a temporary file and a rename, so that a reader
// never sees half a file), curves.png (drawn by gnuplot, when installed) and the
// checkpoint's path. The trellis program's run directories are these.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

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
  /// Rows after step `up_to_step` (the checkpoint's) are dropped: they belong to steps
  /// the run lost and does again, so that no step has two rows.
  void load_curves(long up_to_step = std::numeric_limits<long>::max()) {
    std::ifstream in(path("curves.csv"));
    std::string line;
    bool header = true;
    while (std::getline(in, line)) {
      if (header) {
        header = false;
        continue;
      }
      if (line.empty()) continue;
      long const step = std::strtol(line.c_str(), nullptr, 10);
      if (step <= up_to_step) curve_rows_.push_back(line);
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

  /// curves.png from curves.csv (the train and valid metric against training minutes),
  /// drawn by gnuplot and renamed into place; false when gnuplot is missing or fails.
  bool plot_curves(std::string const& metric) {
    std::string const script = path("curves.gp"), png = path("curves.png.tmp");
    {
      std::ofstream gp(script, std::ios::trunc);
      gp << "set terminal png size 900,600\nset output '" << png << "'\nset datafile separator ','\n"
         << "set key autotitle columnhead\nset xlabel 'training minutes'\nset ylabel '" << metric << "'\n"
         << "set grid\nset title 'trellis train: " << metric << "'\n"
         << "plot '" << path("curves.csv") << "' using 3:6 with lines lw 2 title 'train', "
         << "'' using 3:7 with linespoints pt 7 lw 2 title 'valid'\n";
    }
    bool const drawn = run_gnuplot(script) && std::filesystem::exists(png);
    std::error_code ec;
    if (drawn) std::filesystem::rename(png, path("curves.png"), ec);
    std::filesystem::remove(script, ec);
    return drawn && !ec;
  }

 private:
  /// gnuplot on `script`, its stderr to /dev/null. Spawned rather than run through
  /// std::system, which ignores SIGINT while it waits: a Ctrl-C meant for training
  /// would be lost during a plot.
  static bool run_gnuplot(std::string const& script) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    std::string program = "gnuplot", file = script;
    char* argv[] = {program.data(), file.data(), nullptr};
    pid_t pid = 0;
    int const spawned = posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) return false;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
      if (errno != EINTR) return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

  std::string dir_;
  std::ofstream log_;
  std::vector<std::string> curve_rows_;
};

}  // namespace trellis

#pragma once
// Stopping a training program cleanly: while a StopSignals lives, SIGINT and SIGTERM
// ask the session to stop at the next step boundary (the Trainer then checkpoints and
// returns), and a second signal ends the program at once. The conventional exit
// status of a program stopped so is 128 + the signal.
#include <csignal>
#include <functional>

namespace trellis {

class StopSignals {
 public:
  StopSignals() {
    received() = 0;
    previous_int_ = std::signal(SIGINT, on_signal);
    previous_term_ = std::signal(SIGTERM, on_signal);
  }
  ~StopSignals() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
  }
  StopSignals(StopSignals const&) = delete;
  StopSignals& operator=(StopSignals const&) = delete;

  /// The first signal received, or 0.
  int signal() const { return int(received()); }
  char const* name() const { return signal() == SIGINT ? "SIGINT" : signal() == SIGTERM ? "SIGTERM" : "none"; }
  int exit_status() const { return 128 + signal(); }
  /// For TrainerCallbacks::stop_requested.
  std::function<bool()> requested() const {
    return [] { return received() != 0; };
  }

 private:
  static volatile std::sig_atomic_t& received() {
    static volatile std::sig_atomic_t sig = 0;
    return sig;
  }
  static void on_signal(int sig) {
    if (received() != 0) {
      std::signal(sig, SIG_DFL);
      std::raise(sig);
    }
    received() = sig;
  }

  using handler = void (*)(int);
  handler previous_int_ = SIG_DFL, previous_term_ = SIG_DFL;
};

}  // namespace trellis

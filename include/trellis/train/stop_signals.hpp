#pragma once
// Stopping a training program cleanly: while a StopSignals lives, SIGINT and SIGTERM
// ask the session to stop at the next step boundary (the Trainer then checkpoints and
// returns), and a second signal ends the program at once. The conventional exit
// status of a program stopped so is 128 + the signal.
#include <atomic>
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
  int signal() const { return received().load(); }
  char const* name() const { return signal() == SIGINT ? "SIGINT" : signal() == SIGTERM ? "SIGTERM" : "none"; }
  int exit_status() const { return 128 + signal(); }
  /// For TrainerCallbacks::stop_requested.
  std::function<bool()> requested() const {
    return [] { return received().load() != 0; };
  }

 private:
  // Lock-free, so safe in a handler, and read by whichever thread asks.
  static std::atomic<int>& received() {
    static std::atomic<int> sig{0};
    static_assert(std::atomic<int>::is_always_lock_free);
    return sig;
  }
  static void on_signal(int sig) {
    if (received().load() != 0) {
      std::signal(sig, SIG_DFL);
      std::raise(sig);
    }
    received().store(sig);
  }

  using handler = void (*)(int);
  handler previous_int_ = SIG_DFL, previous_term_ = SIG_DFL;
};

}  // namespace trellis

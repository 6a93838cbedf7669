#pragma once
// Batches as the reference makes them, on the host:
//   batchify: a token stream cut into N contiguous rows of equal length (the tail that
//             does not fill a row is dropped), stored time-major (steps, N).
//   segments: repack mode (charlm): non-overlapping segments of seq_len, every position
//             scored, the state carried from one to the next; window mode (wordlm):
//             windows of seq_len starting every seq_len - history positions, the state
//             zeroed per window and the first `history` positions of each unscored.
// The target of position t is the token at t + 1.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <trellis/errors.hpp>

namespace trellis::data {

struct TokenBatches {
  long steps = 0, rows = 0;
  std::vector<std::int32_t> data;  ///< (steps, rows), row-major
  std::int32_t at(long t, long n) const { return data[std::size_t(t * rows + n)]; }
};

inline TokenBatches batchify(std::vector<std::int32_t> const& stream, long rows, std::string const& what) {
  if (rows < 1) fail_data(what, ": batch size ", rows, " must be at least 1");
  long const steps = long(stream.size()) / rows;
  if (steps < 2)
    fail_data(what, ": ", stream.size(), " tokens cannot fill ", rows, " rows of at least 2 tokens each");
  TokenBatches b;
  b.steps = steps;
  b.rows = rows;
  b.data.resize(std::size_t(steps * rows));
  for (long n = 0; n < rows; ++n)
    for (long t = 0; t < steps; ++t) b.data[std::size_t(t * rows + n)] = stream[std::size_t(n * steps + t)];
  return b;
}

/// Rows [first, first + count) of `b`: one rank's share of the streams.
inline TokenBatches row_shard(TokenBatches const& b, long first, long count) {
  if (first < 0 || count < 0 || first + count > b.rows)
    fail_data("trellis::data::row_shard: rows [", first, ", ", first + count, ") of ", b.rows);
  if (first == 0 && count == b.rows) return b;
  TokenBatches s;
  s.steps = b.steps;
  s.rows = count;
  s.data.resize(std::size_t(b.steps * count));
  for (long t = 0; t < b.steps; ++t)
    for (long n = 0; n < count; ++n) s.data[std::size_t(t * count + n)] = b.at(t, first + n);
  return s;
}

struct Segment {
  long start = 0, length = 0, scored_from = 0;
  bool reset_state = false;  ///< window mode: every window starts from a zero state
};

/// history == 0: repack mode; history > 0: windows overlapping by `history`.
inline std::vector<Segment> segments(long steps, long seq_len, long history) {
  if (seq_len < 1) fail_data("trellis::data::segments: seq_len ", seq_len, " must be at least 1");
  if (history < 0 || history >= seq_len)
    fail_data("trellis::data::segments: the unscored history (", history, ") must be in [0, seq_len = ", seq_len, ")");
  std::vector<Segment> out;
  long const stride = seq_len - history;
  for (long start = 0; start < steps - 1; start += stride) {
    Segment s;
    s.start = start;
    s.length = std::min(seq_len, steps - 1 - start);
    s.scored_from = history;
    s.reset_state = history > 0;
    if (s.scored_from >= s.length) break;  // nothing left to score
    out.push_back(s);
  }
  return out;
}

/// Inputs and targets of a segment, (length, rows) each.
inline void fill_segment(TokenBatches const& b, Segment const& s, std::int32_t* tokens, std::int32_t* targets) {
  for (long t = 0; t < s.length; ++t)
    for (long n = 0; n < b.rows; ++n) {
      tokens[t * b.rows + n] = b.at(s.start + t, n);
      targets[t * b.rows + n] = b.at(s.start + t + 1, n);
    }
}

}  // namespace trellis::data

#pragma once
// The hyper-parameters that fix a TrellisNet's shapes, in the reference's names.
#include <sstream>
#include <string>
#include <vector>

#include <trellis/errors.hpp>

namespace trellis {

struct TrellisShape {
  int ninp = 0;                 ///< p: input (embedding) width
  int nhid = 0;                 ///< q - nout (the reference's meaning)
  int nout = 0;                 ///< the output block: the last nout channels of z
  int nlevels = 0;              ///< n: number of levels
  std::vector<int> dilation{1}; ///< level i (1-based) uses dilation[(i-1) % size]
  int aux_frequency = 0;        ///< F: levels F, 2F, ... give aux outputs; <= 0 or > n: none
  bool weight_norm = true;      ///< w = g v / ||v||, per output row
  int layers = 1;               ///< M, for the RnnSparse structure: q = M d, nout = d

  int q() const { return nhid + nout; }
  /// Dilation of level `level` (0-based).
  int dilation_of(int level) const { return dilation[level % dilation.size()]; }
  int max_dilation() const {
    int d = 0;
    for (int level = 0; level < nlevels; ++level) d = d > dilation_of(level) ? d : dilation_of(level);
    return d;
  }
  /// Number of aux outputs (levels F, 2F, ... <= n).
  int naux() const { return aux_frequency > 0 && aux_frequency <= nlevels ? nlevels / aux_frequency : 0; }
  /// Aux index of level `level` (0-based), or -1.
  int aux_index(int level) const {
    if (naux() == 0 || (level + 1) % aux_frequency != 0) return -1;
    return (level + 1) / aux_frequency - 1;
  }

  std::string describe() const {
    std::ostringstream out;
    out << "ninp=" << ninp << " nhid=" << nhid << " nout=" << nout << " nlevels=" << nlevels
        << " dilation=[";
    for (std::size_t i = 0; i < dilation.size(); ++i) out << (i ? ", " : "") << dilation[i];
    out << "] aux_frequency=" << aux_frequency << " wnorm=" << (weight_norm ? "on" : "off");
    return out.str();
  }

  void validate(char const* call) const {
    if (ninp < 1 || nout < 1 || nhid < 0 || nlevels < 1)
      detail::fail(call, ": need ninp >= 1, nhid >= 0, nout >= 1, nlevels >= 1; got ", describe());
    if (dilation.empty()) detail::fail(call, ": the dilation cycle is empty (", describe(), ")");
    for (int d : dilation)
      if (d < 1) detail::fail(call, ": the dilation cycle holds ", d, "; every dilation must be >= 1 (", describe(), ")");
  }
};

}  // namespace trellis

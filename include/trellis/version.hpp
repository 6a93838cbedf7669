#pragma once
#define TRELLIS_VERSION_MAJOR 0
#define TRELLIS_VERSION_MINOR 1
#define TRELLIS_VERSION_PATCH 0

namespace trellis {
inline constexpr char const* version_string = "0.1.0";
}

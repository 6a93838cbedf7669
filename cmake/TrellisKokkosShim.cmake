# Debian 12 packages Kokkos 3.4 inside Trilinos (libtrilinos-kokkos-dev). Its
# Kokkos::kokkos target names <prefix>/include, where no header is; the headers are
# in /usr/include/trilinos. Point the target there, as a SYSTEM include because
# those headers do not pass -Wall -Wextra -Werror in C++20.
if(TARGET Kokkos::kokkos AND Kokkos_VERSION VERSION_LESS 4.0)
  get_target_property(_trellis_kokkos_inc Kokkos::kokkos INTERFACE_INCLUDE_DIRECTORIES)
  set(_trellis_kokkos_fix "")
  foreach(_dir IN LISTS _trellis_kokkos_inc)
    if(NOT EXISTS "${_dir}/Kokkos_Core.hpp" AND EXISTS "/usr/include/trilinos/Kokkos_Core.hpp")
      set(_trellis_kokkos_fix "/usr/include/trilinos")
    endif()
  endforeach()
  if(_trellis_kokkos_fix)
    set_target_properties(Kokkos::kokkos PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${_trellis_kokkos_fix}"
      INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${_trellis_kokkos_fix}"
      INTERFACE_COMPILE_FEATURES "cxx_std_20")
  endif()
  unset(_trellis_kokkos_fix)
  unset(_trellis_kokkos_inc)
endif()

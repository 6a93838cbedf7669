# oneDNN (libdnnl) for host GEMMs in float: Trellis::onednn, an imported target made
# from the header and the library, because Debian's own package configuration needs
# an OpenCL development package that nothing here uses. Sets Trellis_ONEDNN_FOUND.
set(Trellis_ONEDNN_FOUND OFF)
find_path(Trellis_ONEDNN_INCLUDE_DIR dnnl.hpp)
find_library(Trellis_ONEDNN_LIBRARY dnnl)
if(Trellis_ONEDNN_INCLUDE_DIR AND Trellis_ONEDNN_LIBRARY)
  set(Trellis_ONEDNN_FOUND ON)
  if(NOT TARGET Trellis::onednn)
    add_library(Trellis::onednn INTERFACE IMPORTED)
    set_target_properties(Trellis::onednn PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${Trellis_ONEDNN_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${Trellis_ONEDNN_LIBRARY}"
      INTERFACE_COMPILE_DEFINITIONS "TRELLIS_HAVE_ONEDNN=1")
  endif()
endif()

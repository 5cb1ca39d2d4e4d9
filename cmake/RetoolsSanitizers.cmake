# RETOOLS_SANITIZE="address;undefined" or "thread": applies to everything built below.
if(RETOOLS_SANITIZE)
  list(JOIN RETOOLS_SANITIZE "," _retools_san)
  add_compile_options(-fsanitize=${_retools_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_retools_san})
endif()

// Owns the test binaries' precompiled header (see tests/CMakeLists.txt).

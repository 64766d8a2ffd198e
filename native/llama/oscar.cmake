# oscar-gguf's part of libllama: the f16 tier, the calibration and their bookkeeping (included from
# vendor/llama.cpp/src/CMakeLists.txt by patches/0006). The include directories are public to the build tree so that
# llama.cpp's own tests and tools that include src/ headers still compile.
set(OSCAR_LLAMA_SOURCES
    ${OSCAR_NATIVE_DIR}/llama/llama-kv-oscar.cpp
    ${OSCAR_NATIVE_DIR}/oscar_tier.c
    ${OSCAR_NATIVE_DIR}/oscar_plan.c
    ${OSCAR_NATIVE_DIR}/oscar_calib.c
    ${OSCAR_NATIVE_DIR}/oscar_calib_gguf.c
    ${OSCAR_NATIVE_DIR}/oscar_fingerprint.c)
target_sources(llama PRIVATE ${OSCAR_LLAMA_SOURCES})
# compiled alone: libllama's unity batches would put their file-local helpers beside llama.cpp's
set_source_files_properties(${OSCAR_LLAMA_SOURCES} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
target_include_directories(llama PUBLIC $<BUILD_INTERFACE:${OSCAR_NATIVE_DIR}> $<BUILD_INTERFACE:${OSCAR_NATIVE_DIR}/llama>)

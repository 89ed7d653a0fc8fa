# stagefarm_library(NAME part DEPS ...): one library per part, public headers under
# <part>/include/stagefarm/<part>/, private sources in <part>/src/ (globbed).
function(stagefarm_library)
  cmake_parse_arguments(ARG "" "NAME;DIR" "DEPS;SOURCES" ${ARGN})
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cc)
  add_library(stagefarm_${ARG_NAME} STATIC ${srcs} ${ARG_SOURCES})
  add_library(stagefarm::${ARG_NAME} ALIAS stagefarm_${ARG_NAME})
  target_include_directories(stagefarm_${ARG_NAME}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(stagefarm_${ARG_NAME} PUBLIC ${ARG_DEPS})
endfunction()

# stagefarm_test(NAME name LABELS unit|integration|slow SOURCES ... DEPS ...)
function(stagefarm_test)
  cmake_parse_arguments(ARG "" "NAME" "LABELS;SOURCES;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_include_directories(${ARG_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${ARG_NAME} PRIVATE
    STAGEFARM_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    STAGEFARM_BINARY="${CMAKE_BINARY_DIR}/cli/stagefarm"
    STAGEFARM_CONFORMANCE_DIR="${PROJECT_SOURCE_DIR}/tests/conformance")
  gtest_discover_tests(${ARG_NAME} PROPERTIES LABELS "${ARG_LABELS}" DISCOVERY_TIMEOUT 60)
endfunction()

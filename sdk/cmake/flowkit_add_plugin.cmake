# flowkit_add_plugin(NAME <plugin> SOURCES <src>... MANIFEST <plugin.json>
#                    [DATA_DIRECTORY <dir>] [OUTPUT_DIRECTORY <dir>] [INSTALL_DESTINATION <dir>]
#                    [NO_INSTALL] [NO_PRECOMPILED_HEADER])
#
# Builds the plugin module lib<plugin>.so with hidden visibility (only the entry symbol
# is exported), puts it beside a copy of its manifest in <dir>/<plugin>/, and installs both
# into <prefix>/lib/flowkit/plugins/<plugin>/ (or INSTALL_DESTINATION/<plugin>). The files of
# DATA_DIRECTORY travel beside them as <plugin>/data/... (BuildContext::plugin_dir + "/data").
function(flowkit_add_plugin)
  cmake_parse_arguments(FK "NO_INSTALL;NO_PRECOMPILED_HEADER" "NAME;MANIFEST;DATA_DIRECTORY;OUTPUT_DIRECTORY;INSTALL_DESTINATION" "SOURCES" ${ARGN})
  if(NOT FK_NAME OR NOT FK_SOURCES OR NOT FK_MANIFEST)
    message(FATAL_ERROR "flowkit_add_plugin: NAME, SOURCES and MANIFEST are required")
  endif()
  if(NOT FK_OUTPUT_DIRECTORY)
    set(FK_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/plugins)
  endif()
  if(NOT FK_INSTALL_DESTINATION)
    if(DEFINED FLOWKIT_PLUGIN_INSTALL_DIR)
      set(FK_INSTALL_DESTINATION ${FLOWKIT_PLUGIN_INSTALL_DIR})
    else()
      set(FK_INSTALL_DESTINATION lib/flowkit/plugins)
    endif()
  endif()
  add_library(${FK_NAME} MODULE ${FK_SOURCES})
  target_link_libraries(${FK_NAME} PRIVATE flowkit::sdk)
  set_target_properties(${FK_NAME} PROPERTIES
    PREFIX "lib" OUTPUT_NAME ${FK_NAME}
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY ${FK_OUTPUT_DIRECTORY}/${FK_NAME}
    INSTALL_RPATH "$ORIGIN/../../..")
  if(COMMAND flowkit_use_pch AND NOT FK_NO_PRECOMPILED_HEADER)
    flowkit_use_pch(${FK_NAME})
  endif()
  get_filename_component(manifest ${FK_MANIFEST} ABSOLUTE)
  configure_file(${manifest} ${FK_OUTPUT_DIRECTORY}/${FK_NAME}/plugin.json COPYONLY)
  if(FK_DATA_DIRECTORY)
    get_filename_component(data_dir ${FK_DATA_DIRECTORY} ABSOLUTE)
    file(GLOB_RECURSE data_files RELATIVE ${data_dir} ${data_dir}/*)
    foreach(f ${data_files})
      configure_file(${data_dir}/${f} ${FK_OUTPUT_DIRECTORY}/${FK_NAME}/data/${f} COPYONLY)
      get_filename_component(sub ${f} DIRECTORY)
      if(NOT FK_NO_INSTALL)
        install(FILES ${data_dir}/${f} DESTINATION ${FK_INSTALL_DESTINATION}/${FK_NAME}/data/${sub})
      endif()
    endforeach()
  endif()
  if(NOT FK_NO_INSTALL)
    install(TARGETS ${FK_NAME} LIBRARY DESTINATION ${FK_INSTALL_DESTINATION}/${FK_NAME})
    install(FILES ${manifest} DESTINATION ${FK_INSTALL_DESTINATION}/${FK_NAME} RENAME plugin.json)
  endif()
endfunction()

// flowkit/version.h — SDK and plugin-API version constants.
#pragma once

// The plugin API version. The host refuses a plugin before calling any of its code
// unless plugin.api_major == FLOWKIT_API_MAJOR and plugin.api_minor <= FLOWKIT_API_MINOR.
//
// Version-bump rule (LLVM-style):
//  * bump MAJOR (and reset MINOR to 0) for any change that breaks already-built plugins:
//    a changed layout of flowkit_plugin_descriptor, a changed, removed or reordered virtual
//    function in any interface or capability class (domain, path, model, loss, solver,
//    registry, flowkit/capabilities/*), a changed
//    field in a struct passed across the boundary (PathSample, SolveResult, BuildContext...);
//  * bump MINOR for additions that old plugins do not see: a new free helper in the SDK
//    library, a new interface kind, a new non-virtual convenience function;
//  * never change either for internal host changes.
#define FLOWKIT_API_MAJOR 3
#define FLOWKIT_API_MINOR 5  // 3.1: flowkit/progress.h; 3.2: flowkit/tensor_file.h, the skipped_data capability;
                             // 3.3: the guidance kind (flowkit/guidance.h, flowkit/objective_guidance.h);
                             // 3.4: flowkit/likelihood.h, the prior_density capability;
                             // 3.5: the persistent_state capability, NpyArray and JPEG readers (flowkit/io.h)
#define FLOWKIT_VERSION "0.1.0"

// flowkit/core/progress_display.h — how the command line shows flowkit::Progress (sampling,
// evaluation, a plugin's matcher): a bar with an ETA redrawn on a terminal, or log lines at each
// quarter (and at least every 30 s) otherwise, as training does.
#pragma once

namespace flowkit::core {

void show_progress_on_stderr(bool terminal);

}  // namespace flowkit::core

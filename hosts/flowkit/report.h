// `flowkit report PATH... [-o FILE]`: one self-contained HTML page about runs, viewable
// offline from file:// (inline SVG charts drawn here, images as data URIs, no external
// resources). Torch-free: reads only the files a run or sweep wrote.
#pragma once
#include <string>
#include <vector>

namespace flowkit::host {

// Writes one self-contained HTML page about the runs; returns the path written.
// One run directory: a run report. Several, or a sweep folder (one with results.jsonl):
// a comparison with the curves overlaid. `output` "" = <run>/report.html for one run,
// <sweep>/report.html for a sweep folder; required for several runs.
// Throws std::invalid_argument for a bad call (no paths, several runs without an output) and
// std::runtime_error naming the file (and line) for bad input: a missing folder, a run
// without metrics.jsonl, a malformed results.jsonl line. A malformed metrics.jsonl line is
// not fatal: it is skipped and named in the page.
std::string write_report(const std::vector<std::string>& paths, const std::string& output);

}  // namespace flowkit::host

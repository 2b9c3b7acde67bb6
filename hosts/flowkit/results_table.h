// `flowkit table results.jsonl --rows KEY --cols KEY --metric NAME`: a sweep's results as a
// Markdown (or CSV) table, each cell the mean over seeds with a stated interval and the number
// of seeds, so that a table in the docs is a command's output anyone can regenerate.
#pragma once
#include <string>
#include <vector>

namespace flowkit::host {

struct TableOptions {
  std::string file;                  // results.jsonl of a sweep
  std::vector<std::string> rows;     // keys: a setting ("model.hidden"), any pipeline key, seed, eval, point
  std::vector<std::string> cols;     // the same; empty: one column per metric
  std::vector<std::string> metrics;  // metric names (nested ones with dots); empty: all numeric ones
  std::vector<std::string> where;    // key=value filters
  std::string format = "md";         // md | csv
  std::string interval = "ci95";     // ci95 (Student t) | sem | std | none | wilson
  std::string count;                 // wilson: the metric holding each line's number of trials
};

// The table text; notes about the data (a cell pooling unlike points) go to *warnings.
// Throws std::runtime_error naming the file (and line) on bad input.
std::string render_table(const TableOptions& options, std::string* warnings);

// Regenerates, in a Markdown file, every block
//   <!-- flowkit table RESULTS --rows KEY [--cols KEY] [--metric NAME]... -->
//   ...table...
//   <!-- end flowkit table -->
// from its command (paths relative to the current directory). With check, writes nothing.
// Returns the number of blocks whose text changed (stale ones, with check).
int update_doc_tables(const std::string& doc, bool check);

// Two-sided 95 % quantile of Student's t with `df` degrees of freedom (df >= 1).
double student_t95(int df);

}  // namespace flowkit::host

// The one-line progress bar of Trainer::run on a terminal (rank 0, stderr is a
// TTY, not --quiet, not --no-progress):
//   step 120/400 [#######-----------]  loss 2.3141 | 51234 tok/s | 0:42 elapsed | ETA 1:38
// format_progress_line is a pure function (unit-tested); ProgressBar does the
// terminal I/O (\r redraw, clearing the line before log lines). Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace pp3d::detail {

struct ProgressInfo {
  int64_t step = 0;        // optimizer steps done (1-based position of the last step)
  int64_t total = 0;       // --max-steps
  int64_t first_step = 0;  // steps already done when this run started (--resume-from)
  double loss = 0.0;
  double tokens_per_s = 0.0;
  double elapsed_s = 0.0;  // since this run's first step started
};

// "0:07", "12:34", "1:02:03" (h:mm:ss from one hour); "--:--" when negative or not finite.
std::string format_duration(double seconds);
// Seconds left at this run's mean step time: elapsed / (step - first_step) * (total - step);
// NaN before this run's first step is done.
double progress_eta_seconds(const ProgressInfo& p);
// The bar line, at most `width` - 1 characters (no wrap on a `width`-column
// terminal); the bar takes the room the text leaves (at least 10 cells, else
// it is dropped, then the text is cut).
std::string format_progress_line(const ProgressInfo& p, int width);

// The terminal's columns (TIOCGWINSZ on `fd`, else $COLUMNS, else 80).
int terminal_width(int fd);

class ProgressBar {
 public:
  // Active only when `enabled` and `out` is a terminal.
  ProgressBar(bool enabled, std::FILE* out = stderr);
  ~ProgressBar();  // ends the line
  bool active() const { return active_; }
  void draw(const ProgressInfo& p);
  // Erases the bar (before a log line); the next draw() redraws it.
  void clear();

 private:
  bool active_ = false, drawn_ = false;
  std::FILE* out_;
};

}  // namespace pp3d::detail

// Progress bar with ETA (see trainer_progress.h).
#include "train/trainer_progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace pp3d::detail {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0.0) return "--:--";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

double progress_eta_seconds(const ProgressInfo& p) {
  const int64_t done = p.step - p.first_step;
  if (done <= 0) return NAN;
  return p.elapsed_s / static_cast<double>(done) * static_cast<double>(std::max<int64_t>(0, p.total - p.step));
}

std::string format_progress_line(const ProgressInfo& p, int width) {
  const std::string head = fmt::format("step {}/{} ", p.step, p.total);
  const std::string tail = fmt::format(" loss {:.4f} | {:.0f} tok/s | {} elapsed | ETA {}", p.loss, p.tokens_per_s,
                                       format_duration(p.elapsed_s), format_duration(progress_eta_seconds(p)));
  const int room = width - 1 - static_cast<int>(head.size() + tail.size()) - 2;  // 2: the brackets
  std::string line;
  if (room >= 10) {
    const double frac = p.total > 0 ? std::clamp(static_cast<double>(p.step) / static_cast<double>(p.total), 0.0, 1.0)
                                    : 0.0;
    const int filled = static_cast<int>(std::floor(frac * room));
    line = head + "[" + std::string(static_cast<std::size_t>(filled), '#') +
           std::string(static_cast<std::size_t>(room - filled), '-') + "]" + tail;
  } else {
    line = head + tail.substr(1);
  }
  if (static_cast<int>(line.size()) > width - 1) line.resize(static_cast<std::size_t>(std::max(0, width - 1)));
  return line;
}

int terminal_width(int fd) {
  winsize ws{};
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    const int n = std::atoi(c);
    if (n > 0) return n;
  }
  return 80;
}

ProgressBar::ProgressBar(bool enabled, std::FILE* out) : out_(out) {
  active_ = enabled && out != nullptr && isatty(fileno(out)) == 1;
}

ProgressBar::~ProgressBar() {
  if (active_ && drawn_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

void ProgressBar::draw(const ProgressInfo& p) {
  if (!active_) return;
  const std::string line = format_progress_line(p, terminal_width(fileno(out_)));
  std::fprintf(out_, "\r%s\033[K", line.c_str());
  std::fflush(out_);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!active_ || !drawn_) return;
  std::fputs("\r\033[K", out_);
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace pp3d::detail

// The launcher's stderr as the user sees it: mpirun's own blocks that only
// repeat a rank's non-zero exit ("Primary job terminated normally, but 1
// process returned a non-zero exit code...", "mpirun detected that one or
// more processes exited with non-zero status...") are dropped, so that a
// program's usage error stays the one line it printed. Everything else (the
// ranks' output, a rank killed by a signal, mpirun's setup errors) passes.
#pragma once

#include <string>
#include <vector>

namespace epx::launch {

class MpirunOutputFilter {
 public:
  // One line of mpirun's stderr, without its '\n'; returns the lines to show now.
  std::vector<std::string> line(const std::string& text);
  // End of the output: what is still held (an unclosed block).
  std::vector<std::string> finish();

 private:
  bool in_block_ = false;
  std::vector<std::string> block_;  // from the opening rule on
};

// Runs the launcher at `path` with `argv` (argv[0] first, NULL last) as a
// child whose stderr goes through the filter; forwards SIGTERM and SIGHUP,
// and SIGINT/SIGQUIT sent to epxrun alone (a terminal's reach the child
// too); if epxrun is killed outright, the child gets SIGTERM. Returns the exit status to exit with
// (128 + N for signal N), or -1 with errno set when the launcher could not be started.
int run_filtered(const std::string& path, const std::vector<char*>& argv);

}  // namespace epx::launch

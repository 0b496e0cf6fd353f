#include "launch/mpirun_output.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace epx::launch {

namespace {

// Open MPI frames each help message with rules of dashes.
bool is_rule(const std::string& s) {
  return s.size() >= 20 && s.find_first_not_of('-') == std::string::npos;
}

// The two messages that only say a rank exited non-zero (its own output said why).
bool only_reports_exit_status(const std::vector<std::string>& block) {
  for (const std::string& s : block)
    if (s.find("terminated normally, but") != std::string::npos ||
        s.find("exited with non-zero status, thus causing") != std::string::npos)
      return true;
  return false;
}

pid_t g_child = -1;

void forward(int sig, siginfo_t* info, void*) {
  // A terminal's SIGINT/SIGQUIT already reached the child (same process group).
  const bool from_process = info && (info->si_code == SI_USER || info->si_code == SI_QUEUE);
  if (g_child > 0 && (sig == SIGTERM || sig == SIGHUP || from_process)) kill(g_child, sig);
}

void write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void show(const std::vector<std::string>& lines) {
  for (const std::string& s : lines) write_all(STDERR_FILENO, s + "\n");
}

}  // namespace

std::vector<std::string> MpirunOutputFilter::line(const std::string& text) {
  if (!in_block_) {
    if (!is_rule(text)) return {text};
    in_block_ = true;
    block_ = {text};
    return {};
  }
  if (is_rule(text) && block_.size() == 1) {
    // Two rules back to back: the first opened nothing; this one may.
    std::vector<std::string> out = block_;
    block_ = {text};
    return out;
  }
  block_.push_back(text);
  if (!is_rule(text)) return {};
  in_block_ = false;  // the closing rule
  std::vector<std::string> out;
  if (!only_reports_exit_status(block_)) out.swap(block_);
  block_.clear();
  return out;
}

std::vector<std::string> MpirunOutputFilter::finish() {
  std::vector<std::string> out;
  if (in_block_ && !only_reports_exit_status(block_)) out = block_;
  block_.clear();
  in_block_ = false;
  return out;
}

int run_filtered(const std::string& path, const std::vector<char*>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) {
    // epxrun killed outright (SIGKILL cannot be passed on) must not leave the
    // job running: mpirun then gets SIGTERM and ends it.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(128 + SIGTERM);
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    execv(path.c_str(), argv.data());
    const std::string why = "epxrun: cannot run " + path + ": " + std::strerror(errno) + "\n";
    write_all(STDERR_FILENO, why);
    _exit(127);
  }
  close(fds[1]);
  g_child = child;
  struct sigaction sa {};
  sa.sa_sigaction = forward;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(sig, &sa, nullptr);

  MpirunOutputFilter filter;
  std::string pending;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t start = 0, nl;
    while ((nl = pending.find('\n', start)) != std::string::npos) {
      show(filter.line(pending.substr(start, nl - start)));
      start = nl + 1;
    }
    pending.erase(0, start);
  }
  if (!pending.empty()) show(filter.line(pending));
  show(filter.finish());
  close(fds[0]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace epx::launch

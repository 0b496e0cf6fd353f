#include "benchmarks/serve_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "benchmarks/options.hpp"

extern char** environ;

namespace epx::bench {

namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string where(const Endpoint& at, const std::string& path) {
  return "http://" + at.host + ":" + std::to_string(at.port) + path;
}

}  // namespace

Endpoint parse_url(const std::string& url) {
  static const std::regex re(R"(^http://([^:/]+):([0-9]{1,5})(/.*)?$)");
  std::smatch m;
  if (!std::regex_match(url, m, re))
    throw UsageError("--url = '" + url + "', expected http://HOST:PORT");
  Endpoint e{m[1].str(), std::stoi(m[2].str())};
  if (e.port < 1 || e.port > 65535) throw UsageError("--url = '" + url + "': no such port");
  return e;
}

std::string get_text(const Endpoint& at, const std::string& path) {
  httplib::Client cli(at.host, at.port);
  cli.set_read_timeout(60, 0);
  const httplib::Result r = cli.Get(path.c_str());
  if (!r) throw std::runtime_error("GET " + where(at, path) + ": " + httplib::to_string(r.error()));
  if (r->status != 200)
    throw std::runtime_error("GET " + where(at, path) + ": status " + std::to_string(r->status) +
                             " " + r->body);
  return r->body;
}

nlohmann::json get_json(const Endpoint& at, const std::string& path) {
  return nlohmann::json::parse(get_text(at, path));
}

StepTimes decode_step_times(const std::string& metrics) {
  static const std::regex re(
      R"re(^epx_decode_step_seconds_(sum|count)\{mode="([^"]+)"\} (\S+)$)re");
  StepTimes t;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_match(line, m, re)) continue;
    std::size_t i = 0;
    while (i < t.modes.size() && t.modes[i] != m[2].str()) ++i;
    if (i == t.modes.size()) {
      t.modes.push_back(m[2].str());
      t.seconds.push_back(0);
      t.count.push_back(0);
    }
    (m[1].str() == "sum" ? t.seconds : t.count)[i] = std::stod(m[3].str());
  }
  return t;
}

StepTimes operator-(const StepTimes& after, const StepTimes& before) {
  StepTimes d = after;
  for (std::size_t i = 0; i < d.modes.size(); ++i)
    for (std::size_t j = 0; j < before.modes.size(); ++j)
      if (before.modes[j] == d.modes[i]) {
        d.seconds[i] -= before.seconds[j];
        d.count[i] -= before.count[j];
      }
  return d;
}

Completion stream_completion(const Endpoint& at, const std::vector<std::int32_t>& prompt,
                             int max_tokens) {
  Completion c;
  const nlohmann::json body = {
      {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"stream", true}};
  httplib::Client cli(at.host, at.port);
  cli.set_read_timeout(3600, 0);
  cli.set_tcp_nodelay(true);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string pending;
  int status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    const double t = since(t0);
    pending.append(data, n);
    for (std::size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") continue;
      const nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
      if (j.is_discarded()) {
        c.error = "an event that is not JSON: " + payload;
        return false;
      }
      if (j.contains("error")) {
        c.error = j["error"].dump();
        return false;
      }
      const nlohmann::json& ch = j["choices"][0];
      const std::size_t got = ch.contains("token_ids") ? ch["token_ids"].size() : 0;
      if (got > 0) {
        if (c.tokens == 0) c.ttft = t;
        c.last = t;
        c.tokens += static_cast<std::int64_t>(got);
      }
      if (ch.contains("finish_reason") && ch["finish_reason"].is_string())
        c.finish_reason = ch["finish_reason"].get<std::string>();
    }
    return true;
  };
  const httplib::Result r = cli.send(req);
  if (!r) {
    if (c.error.empty())
      c.error = "POST " + where(at, req.path) + ": " + httplib::to_string(r.error());
    return c;
  }
  if (status != 200) {
    c.error = "status " + std::to_string(status) + " " + pending;
    return c;
  }
  c.ok = c.error.empty() && !c.finish_reason.empty();
  if (c.ok && c.tokens != max_tokens && c.finish_reason == "length") {
    c.ok = false;
    c.error = "finish_reason length after " + std::to_string(c.tokens) + " of " +
              std::to_string(max_tokens) + " tokens";
  }
  if (c.error.empty() && !c.ok) c.error = "the stream ended without a finish_reason";
  return c;
}

LaunchedServer::LaunchedServer(int ranks, const std::vector<std::string>& serve_args,
                               double start_timeout_s) {
  const std::filesystem::path bin = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  std::vector<std::string> argv = {(bin / "epxrun").string(),
                                   "-n",
                                   std::to_string(ranks),
                                   "--",
                                   (bin / "epx-serve").string(),
                                   "--port",
                                   "0"};
  argv.insert(argv.end(), serve_args.begin(), serve_args.end());
  // This process may run under mpirun itself: its Open MPI / PMIx variables
  // would make the inner mpirun think it is a rank of ours.
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string s = *e;
    bool mpi = false;
    for (const char* p : {"OMPI_", "PMIX_", "PRTE_", "OPAL_", "PMI_", "HYDRA_"})
      mpi = mpi || s.rfind(p, 0) == 0;
    if (!mpi) env.push_back(s);
  }
  std::vector<char*> av, ev;
  for (std::string& s : argv) av.push_back(s.data());
  av.push_back(nullptr);
  for (std::string& s : env) ev.push_back(s.data());
  ev.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe: " + std::string(strerror(errno)));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  const int rc = posix_spawn(&child_, av[0], &fa, nullptr, av.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    throw std::runtime_error("cannot start " + argv[0] + ": " + strerror(rc));
  }
  out_fd_ = fds[0];
  std::string cmd;
  for (const std::string& s : argv) cmd += (cmd.empty() ? "" : " ") + s;
  std::fprintf(stderr, "epx-bench serve: started %s\n", cmd.c_str());

  // The first line: "epx-serve: listening on http://HOST:PORT (pid P, ...".
  static const std::regex re(R"(listening on http://([^:]+):([0-9]+) \(pid ([0-9]+))");
  std::string line, seen;
  const auto t0 = std::chrono::steady_clock::now();
  while (rank0_ < 0) {
    if (since(t0) > start_timeout_s) {
      stop(5);
      throw std::runtime_error("epx-serve did not say where it listens within " +
                               std::to_string(start_timeout_s) + " s");
    }
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(out_fd_, buf, sizeof buf);
    if (n <= 0) {
      const int status = stop(5);
      throw std::runtime_error("epx-serve exited (status " + std::to_string(status) +
                               ") before listening: " + seen);
    }
    seen.append(buf, static_cast<std::size_t>(n));
    std::smatch m;
    if (std::regex_search(seen, m, re)) {
      endpoint_ = {m[1].str(), std::stoi(m[2].str())};
      rank0_ = static_cast<pid_t>(std::stol(m[3].str()));
    }
  }
  std::fprintf(stderr, "%s", seen.c_str());
  // The rest of its output goes to our stderr.
  reader_ = std::thread([fd = out_fd_] {
    char buf[4096];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;)
      if (fwrite(buf, 1, static_cast<std::size_t>(n), stderr) == 0) break;
  });
}

int LaunchedServer::stop(double timeout_s) {
  if (child_ < 0) return 0;
  if (rank0_ > 0) kill(rank0_, SIGTERM);
  int status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  int result = -1;
  for (;;) {
    const pid_t w = waitpid(child_, &status, WNOHANG);
    if (w == child_) {
      result = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    if (since(t0) > timeout_s) {
      kill(child_, SIGTERM);  // mpirun ends its ranks
      waitpid(child_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  child_ = -1;
  if (reader_.joinable()) reader_.join();
  if (out_fd_ >= 0) close(out_fd_);
  out_fd_ = -1;
  return result;
}

LaunchedServer::~LaunchedServer() {
  stop();
}

}  // namespace epx::bench

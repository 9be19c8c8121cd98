#pragma once
// A minimal Chrome DevTools Protocol client for tests: headless Chromium (Debian `chromium`)
// started with --remote-debugging-pipe, which speaks CDP as NUL-terminated JSON messages on file
// descriptors 3 (commands in) and 4 (responses and events out) - the transport Puppeteer's
// `pipe: true` uses - so no WebSocket library is needed. Flat sessions (Target.attachToTarget
// with flatten) address one page. Events are kept for inspection (console errors, exceptions).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace florence::test::search {

class Chromium {
 public:
  /// Starts chromium with the flags that work in this container (root, no GPU, no network use).
  /// `log` receives its stdout/stderr. Throws std::runtime_error when it cannot start.
  Chromium(const std::filesystem::path& profile, const std::filesystem::path& log, int width = 1280, int height = 900) {
    int to_child[2], from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    const std::string profile_flag = "--user-data-dir=" + profile.string();
    const std::string size_flag = "--window-size=" + std::to_string(width) + "," + std::to_string(height);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // Child: fds 3 and 4 are the pipe ends (dup2 clears O_CLOEXEC on the copies).
      const int in = ::fcntl(to_child[0], F_DUPFD, 10), out = ::fcntl(from_child[1], F_DUPFD, 10);
      ::dup2(in, 3);
      ::dup2(out, 4);
      const int lf = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (lf >= 0) {
        ::dup2(lf, 1);
        ::dup2(lf, 2);
      }
      ::execl("/usr/bin/chromium", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--hide-scrollbars", "--remote-debugging-pipe", profile_flag.c_str(), size_flag.c_str(), "about:blank",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    to_ = to_child[1];
    from_ = from_child[0];
  }

  ~Chromium() {
    try {
      if (to_ >= 0) send("Browser.close", nlohmann::json::object(), "");
    } catch (...) {
    }
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (to_ >= 0) ::close(to_);
    if (from_ >= 0) ::close(from_);
  }
  Chromium(const Chromium&) = delete;
  Chromium& operator=(const Chromium&) = delete;

  /// Sends a command and waits for its response; returns "result". Throws std::runtime_error on
  /// a CDP error, a timeout or a closed pipe.
  nlohmann::json call(const std::string& method, const nlohmann::json& params, const std::string& session,
                      double timeout_s = 30) {
    const int id = send(method, params, session);
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout_s));
    for (;;) {
      nlohmann::json m = read(end);
      if (m.contains("id") && m["id"] == id) {
        if (m.contains("error")) throw std::runtime_error(method + ": " + m["error"].dump());
        return m.value("result", nlohmann::json::object());
      }
    }
  }

  /// Opens a new page at `url` and returns its session id (Runtime, Log and Page domains enabled
  /// before navigation, so every console message and exception is recorded).
  std::string open(const std::string& url) {
    const std::string target = call("Target.createTarget", {{"url", "about:blank"}}, "")["targetId"];
    const std::string session = call("Target.attachToTarget", {{"targetId", target}, {"flatten", true}}, "")["sessionId"];
    for (const char* domain : {"Runtime.enable", "Log.enable", "Page.enable"}) call(domain, nlohmann::json::object(), session);
    call("Page.navigate", {{"url", url}}, session);
    return session;
  }

  /// Evaluates a JavaScript expression in the page (promises awaited); returns its value.
  nlohmann::json eval(const std::string& session, const std::string& expr) {
    nlohmann::json r = call("Runtime.evaluate", {{"expression", expr}, {"returnByValue", true}, {"awaitPromise", true}}, session);
    if (r.contains("exceptionDetails")) throw std::runtime_error("page script failed: " + r["exceptionDetails"].dump());
    return r["result"].value("value", nlohmann::json());
  }

  /// Polls `expr` until it is true; false on timeout.
  bool wait_for(const std::string& session, const std::string& expr, double timeout_s = 30) {
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout_s));
    while (std::chrono::steady_clock::now() < end) {
      if (eval(session, "!!(" + expr + ")") == true) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  /// A real mouse click at page coordinates (Input domain: press + release).
  void click(const std::string& session, double x, double y) {
    for (const char* type : {"mousePressed", "mouseReleased"})
      call("Input.dispatchMouseEvent", {{"type", type}, {"x", x}, {"y", y}, {"button", "left"}, {"clickCount", 1}}, session);
  }

  /// Console errors/warnings, uncaught exceptions and error log entries (failed loads) seen so far,
  /// one line each.
  std::vector<std::string> problems() {
    drain();
    std::vector<std::string> out;
    for (const auto& e : events_) {
      const std::string m = e.value("method", std::string());
      const auto& p = e.value("params", nlohmann::json::object());
      if (m == "Runtime.exceptionThrown") out.push_back("exception: " + p.dump());
      if (m == "Runtime.consoleAPICalled" && (p.value("type", "") == "error" || p.value("type", "") == "warning"))
        out.push_back("console." + p.value("type", std::string()) + ": " + p["args"].dump());
      if (m == "Log.entryAdded" && p["entry"].value("level", "") == "error") out.push_back("log: " + p["entry"].dump());
    }
    return out;
  }

 private:
  int send(const std::string& method, const nlohmann::json& params, const std::string& session) {
    nlohmann::json m{{"id", next_id_}, {"method", method}, {"params", params}};
    if (!session.empty()) m["sessionId"] = session;
    std::string s = m.dump();
    s.push_back('\0');
    for (size_t done = 0; done < s.size();) {
      const ssize_t n = ::write(to_, s.data() + done, s.size() - done);
      if (n <= 0) throw std::runtime_error("chromium pipe closed");
      done += size_t(n);
    }
    return next_id_++;
  }
  nlohmann::json read(std::chrono::steady_clock::time_point end) {
    for (;;) {
      const size_t z = buf_.find('\0');
      if (z != std::string::npos) {
        nlohmann::json m = nlohmann::json::parse(buf_.substr(0, z));
        buf_.erase(0, z + 1);
        if (!m.contains("id")) events_.push_back(m);
        return m;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count();
      if (left <= 0) throw std::runtime_error("chromium: timed out waiting for a response");
      pollfd p{from_, POLLIN, 0};
      if (::poll(&p, 1, int(left)) <= 0) continue;
      char b[65536];
      const ssize_t n = ::read(from_, b, sizeof b);
      if (n <= 0) throw std::runtime_error("chromium pipe closed (did it crash? see its log)");
      buf_.append(b, size_t(n));
    }
  }
  void drain() {  // read what is already there without blocking
    for (;;) {
      pollfd p{from_, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) break;
      char b[65536];
      const ssize_t n = ::read(from_, b, sizeof b);
      if (n <= 0) break;
      buf_.append(b, size_t(n));
    }
    for (size_t z; (z = buf_.find('\0')) != std::string::npos;) {
      nlohmann::json m = nlohmann::json::parse(buf_.substr(0, z));
      buf_.erase(0, z + 1);
      if (!m.contains("id")) events_.push_back(m);
    }
  }

  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  int next_id_ = 1;
  std::string buf_;
  std::vector<nlohmann::json> events_;
};

}  // namespace florence::test::search

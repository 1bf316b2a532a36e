#include "support/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

namespace singleflight::test {
namespace {

uint64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    Kill(SIGKILL);
    Wait();
  }
  if (in_fd_ >= 0) close(in_fd_);
  if (out_fd_ >= 0) close(out_fd_);
}

bool ChildProcess::Spawn(const std::string& path, const std::vector<std::string>& args,
                         Stderr stderr_to) {
  int to_child[2];
  int from_child[2];
  if (pipe2(to_child, O_CLOEXEC) != 0) return false;
  if (pipe2(from_child, O_CLOEXEC) != 0) return false;
  pid_ = fork();
  if (pid_ < 0) return false;
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a killed test
    dup2(to_child[0], STDIN_FILENO);
    dup2(from_child[1], STDOUT_FILENO);
    if (stderr_to == Stderr::kWithStdout) dup2(from_child[1], STDERR_FILENO);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(path.c_str()));
    for (auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  in_fd_ = to_child[1];
  out_fd_ = from_child[0];
  return true;
}

bool ChildProcess::WriteLine(const std::string& line) {
  std::string data = line + "\n";
  return write(in_fd_, data.data(), data.size()) == static_cast<ssize_t>(data.size());
}

void ChildProcess::CloseStdin() {
  if (in_fd_ >= 0) close(in_fd_);
  in_fd_ = -1;
}

bool ChildProcess::ReadLine(std::string* line, uint64_t timeout_ms) {
  uint64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      *line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return true;
    }
    uint64_t now = NowMs();
    if (now >= deadline) return false;
    pollfd pfd{out_fd_, POLLIN, 0};
    int ready = poll(&pfd, 1, static_cast<int>(deadline - now));
    if (ready <= 0) continue;
    char chunk[4096];
    ssize_t n = read(out_fd_, chunk, sizeof chunk);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

bool ChildProcess::ReadAll(std::vector<std::string>* lines, uint64_t timeout_ms) {
  uint64_t deadline = NowMs() + timeout_ms;
  std::string line;
  for (;;) {
    uint64_t now = NowMs();
    if (now >= deadline) return false;
    if (!ReadLine(&line, deadline - now)) {
      // EOF (or the deadline): a partial last line still counts.
      if (!buffer_.empty()) lines->push_back(std::move(buffer_));
      buffer_.clear();
      return NowMs() < deadline;
    }
    lines->push_back(line);
  }
}

int ChildProcess::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  if (waitpid(pid_, &status, 0) != pid_) return -1;
  pid_ = -1;
  return status;
}

void ChildProcess::Kill(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

bool ChildProcess::Stop() {
  if (pid_ <= 0 || kill(pid_, SIGSTOP) != 0) return false;
  int status = 0;
  while (waitpid(pid_, &status, WUNTRACED) == pid_) {
    if (WIFSTOPPED(status)) return true;
    if (WIFEXITED(status) || WIFSIGNALED(status)) break;  // reaped: it is gone
  }
  pid_ = -1;
  return false;
}

bool ChildProcess::Continue() {
  if (pid_ <= 0 || kill(pid_, SIGCONT) != 0) return false;
  int status = 0;
  while (waitpid(pid_, &status, WCONTINUED) == pid_) {
    if (WIFCONTINUED(status)) return true;
    if (WIFEXITED(status) || WIFSIGNALED(status)) break;  // reaped: it is gone
  }
  pid_ = -1;
  return false;
}

bool ProgramRun::succeeded() const {
  return ended && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

ProgramRun RunProgram(const std::string& path, const std::vector<std::string>& args,
                      uint64_t timeout_ms) {
  ProgramRun run;
  ChildProcess child;
  if (!child.Spawn(path, args, ChildProcess::Stderr::kWithStdout)) {
    run.output = "could not start " + path;
    return run;
  }
  child.CloseStdin();
  std::vector<std::string> lines;
  run.ended = child.ReadAll(&lines, timeout_ms);
  for (const std::string& line : lines) run.output += line + "\n";
  if (!run.ended) return run;  // the ChildProcess destructor kills it
  run.status = child.Wait();
  return run;
}

std::vector<std::string> SplitWords(const std::string& line) {
  std::vector<std::string> words;
  size_t start = 0;
  while (start <= line.size()) {
    size_t end = line.find(' ', start);
    if (end == std::string::npos) end = line.size();
    words.push_back(line.substr(start, end - start));
    start = end + 1;
  }
  return words;
}

}  // namespace singleflight::test

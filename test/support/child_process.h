// ChildProcess: a real process a multi-process test starts, talks to over its
// stdin/stdout, and reaps. Reading is bounded by a deadline so a stuck child
// fails the test instead of hanging it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace singleflight::test {

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();  // kills and reaps a child still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool Spawn(const std::string& path, const std::vector<std::string>& args);
  bool WriteLine(const std::string& line);
  // Reads one line (without '\n'); false on EOF or when the deadline passes.
  bool ReadLine(std::string* line, uint64_t timeout_ms);
  // Reads every line until EOF; false if the deadline passes first.
  bool ReadAll(std::vector<std::string>* lines, uint64_t timeout_ms);
  // Waits for exit; returns the raw wait status, or -1.
  int Wait();
  void Kill(int signal);
  // SIGSTOP / SIGCONT, returning once the child has really stopped (or
  // resumed), so a test knows the child's timers cannot run in between.
  bool Stop();
  bool Continue();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int in_fd_ = -1;   // the child's stdin
  int out_fd_ = -1;  // the child's stdout
  std::string buffer_;
};

// Splits "a b c" on single spaces.
std::vector<std::string> SplitWords(const std::string& line);

}  // namespace singleflight::test

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

  // Where the child's stderr goes: to the test's own stderr (so a child's
  // diagnostics show in the test log), or into the stdout pipe, interleaved
  // as written, for a tool whose error messages are what the test reads.
  enum class Stderr { kInherit, kWithStdout };

  bool Spawn(const std::string& path, const std::vector<std::string>& args,
             Stderr stderr_to = Stderr::kInherit);
  bool WriteLine(const std::string& line);
  // Closes the child's stdin, so a child that reads it sees EOF.
  void CloseStdin();
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

// One program run to its exit with its stdin closed, for command-line tools
// (openssl, redis-cli): what it wrote to stdout and stderr, and how it ended.
struct ProgramRun {
  bool ended = false;  // spawned, and exited within the bound
  int status = -1;     // the raw wait status
  std::string output;  // stdout and stderr together

  bool succeeded() const;  // ended with exit status 0
};
// `timeout_ms` bounds a hung tool; a run that exceeds it is killed and
// reported as not ended.
ProgramRun RunProgram(const std::string& path, const std::vector<std::string>& args,
                      uint64_t timeout_ms);

// Splits "a b c" on single spaces.
std::vector<std::string> SplitWords(const std::string& line);

}  // namespace singleflight::test

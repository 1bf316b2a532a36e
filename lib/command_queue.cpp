#include "command_queue.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdint>

namespace singleflight::internal {
namespace {

// RESP bytes of one command; binary-safe. Empty when hiredis refuses.
std::string Format(const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const std::string& arg : argv) {
    args.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  char* command = nullptr;
  int length =
      redisFormatCommandArgv(&command, static_cast<int>(args.size()), args.data(), lengths.data());
  if (length < 0) return std::string();
  std::string out(command, static_cast<size_t>(length));
  redisFreeCommand(command);
  return out;
}

}  // namespace

bool CommandQueue::Push(const std::vector<std::string>& argv, Callback& callback, uint64_t now,
                        bool with_deadline) {
  std::string bytes = Format(argv);
  if (bytes.empty()) return false;
  unwritten_bytes_ += bytes.size();
  unwritten_.push_back(std::move(bytes));
  if (callback) {
    uint64_t deadline = with_deadline && timeout_ms_ > 0 ? now + timeout_ms_ : 0;
    waiting_.push_back(Waiting{std::move(callback), now, deadline});
  }
  return true;
}

std::vector<std::string> CommandQueue::TakeUnwritten() {
  for (Waiting& command : waiting_) command.written = true;
  std::vector<std::string> out;
  out.swap(unwritten_);
  unwritten_bytes_ = 0;
  return out;
}

bool CommandQueue::PopReply(Callback* callback) {
  if (waiting_.empty()) return false;
  *callback = std::move(waiting_.front().callback);
  waiting_.pop_front();
  return true;
}

std::vector<CommandQueue::Callback> CommandQueue::TakeExpired(uint64_t now) {
  std::vector<Callback> expired;
  for (Waiting& command : waiting_) {
    if (command.deadline_ms == 0 || command.deadline_ms > now) break;
    if (!command.callback) continue;
    expired.push_back(std::move(command.callback));
    command.callback = nullptr;
  }
  return expired;
}

bool CommandQueue::SilentTooLong(uint64_t now) const {
  if (liveness_ms_ == 0 || waiting_.empty()) return false;
  return std::max(waiting_.front().sent_ms, last_heard_ms_) + liveness_ms_ <= now;
}

uint64_t CommandQueue::NextDue() const {
  uint64_t due = UINT64_MAX;
  for (const Waiting& command : waiting_) {
    if (command.callback && command.deadline_ms != 0) {
      due = command.deadline_ms;
      break;
    }
  }
  if (liveness_ms_ > 0 && !waiting_.empty()) {
    due = std::min(due, std::max(waiting_.front().sent_ms, last_heard_ms_) + liveness_ms_);
  }
  return due;
}

std::vector<std::pair<CommandQueue::Callback, Status>> CommandQueue::TakeAll(
    const Status& written, const Status& unwritten) {
  std::vector<std::pair<Callback, Status>> out;
  for (Waiting& command : waiting_) {
    if (command.callback) {
      out.emplace_back(std::move(command.callback), command.written ? written : unwritten);
    }
  }
  waiting_.clear();
  unwritten_.clear();
  unwritten_bytes_ = 0;
  return out;
}

}  // namespace singleflight::internal

// CommandQueue: one connection's commands between Command() and their reply
// — formatted bytes waiting for the loop turn's write, then written commands
// waiting for their replies, in send order — with each command's deadline
// and the connection's liveness bound.
//
// No I/O and no clock of its own: the connection passes the time in, so the
// timing rules (a command timed out at its deadline, its late reply dropped,
// silence past the liveness bound) are unit-tested on virtual time
// (test/command_queue_test.cpp).
//
// Invariants: replies match the front of the queue (Redis answers in order),
// so a timed-out command stays in the queue, without its callback, until
// its late reply has been read; deadlines grow in queue order (one timeout
// for all), so the first live command's deadline is the earliest.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "redis_reply.h"
#include "singleflight/status.h"

namespace singleflight::internal {

class CommandQueue {
 public:
  using Callback = std::function<void(const Status& status, const Reply& reply)>;

  // timeout_ms: every command's deadline (0: none); liveness_ms: how long the
  // server may stay silent while a command waits (0: forever).
  CommandQueue(uint64_t timeout_ms, uint64_t liveness_ms)
      : timeout_ms_(timeout_ms), liveness_ms_(liveness_ms) {}

  // Formats argv and queues it for the next write. A null callback expects
  // no reply (SUBSCRIBE in subscriber mode). with_deadline false: bounded
  // elsewhere (the handshake, by the attempt's deadline). The callback is
  // moved from only when queued; false (argv cannot be formatted) leaves it.
  bool Push(const std::vector<std::string>& argv, Callback& callback, uint64_t now,
            bool with_deadline = true);

  // The bytes queued since the last call, in order; their commands count as
  // written from now on.
  std::vector<std::string> TakeUnwritten();
  size_t unwritten_bytes() const { return unwritten_bytes_; }

  // The next reply belongs to the oldest waiting command: *callback is its
  // callback, or empty when it had timed out (the late reply is dropped).
  // False when no command waits for a reply.
  bool PopReply(Callback* callback);
  bool empty() const { return waiting_.empty(); }

  // Bytes arrived: the server is alive.
  void HeardFromServer(uint64_t now) { last_heard_ms_ = now; }
  // Commands whose deadline is <= now: marked timed out, their callbacks
  // handed over (each exactly once).
  std::vector<Callback> TakeExpired(uint64_t now);
  // A command has waited, with nothing heard from the server, for the
  // liveness bound.
  bool SilentTooLong(uint64_t now) const;
  // When the owner must look again (TakeExpired / SilentTooLong); UINT64_MAX
  // when nothing is due.
  uint64_t NextDue() const;

  // Empties the queue, handing over every callback not yet answered with
  // the status it gets: `written` for a command that reached the socket (it
  // may have run), `unwritten` for one that never left (it did not).
  std::vector<std::pair<Callback, Status>> TakeAll(const Status& written, const Status& unwritten);

 private:
  struct Waiting {
    Callback callback;  // empty once timed out, or when no reply is expected
    uint64_t sent_ms;
    uint64_t deadline_ms;  // 0: none
    bool written = false;
  };

  uint64_t timeout_ms_;
  uint64_t liveness_ms_;
  std::deque<Waiting> waiting_;  // commands with a reply to come, in send order
  std::vector<std::string> unwritten_;
  size_t unwritten_bytes_ = 0;
  uint64_t last_heard_ms_ = 0;
};

}  // namespace singleflight::internal

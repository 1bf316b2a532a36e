// CommandQueue on virtual time: deadlines, late replies, the liveness bound
// and what a lost connection tells each command — the connection's timing
// rules without a server or a clock.
#include "command_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace singleflight::internal {
namespace {

// Records the answers of the commands it makes callbacks for.
struct Answers {
  std::vector<std::string> got;  // "name:reply" or "name:<status code>"
  CommandQueue::Callback For(const std::string& name) {
    return [this, name](const Status& status, const Reply& reply) {
      got.push_back(name + ":" + (status.ok() ? reply.str : std::string(CodeName(status.code()))));
    };
  }
};

Reply Text(const std::string& text) {
  Reply reply;
  reply.type = Reply::Type::kString;
  reply.str = text;
  return reply;
}

// Hands the next reply to its command, as the connection's reader does.
void Answer(CommandQueue& queue, const std::string& text) {
  CommandQueue::Callback callback;
  ASSERT_TRUE(queue.PopReply(&callback));
  if (callback) callback(Status::Ok(), Text(text));
}

void Push(CommandQueue& queue, CommandQueue::Callback callback, uint64_t now) {
  ASSERT_TRUE(queue.Push({"ECHO", "x"}, callback, now));
}

TEST(CommandQueueTest, ATimedOutCommandsLateReplyIsDroppedAndTheNextGetsItsOwn) {
  CommandQueue queue(100, 0);
  Answers answers;
  Push(queue, answers.For("a"), 0);
  Push(queue, answers.For("b"), 50);
  queue.TakeUnwritten();
  EXPECT_EQ(queue.NextDue(), 100u);
  EXPECT_TRUE(queue.TakeExpired(99).empty());
  std::vector<CommandQueue::Callback> expired = queue.TakeExpired(100);
  ASSERT_EQ(expired.size(), 1u);
  expired[0](Status(Code::kTimeout, "late"), Reply{});
  EXPECT_EQ(queue.NextDue(), 150u);  // b's deadline, a is answered
  Answer(queue, "reply of a");       // late: nobody hears it
  Answer(queue, "reply of b");
  EXPECT_EQ(answers.got, (std::vector<std::string>{"a:timeout", "b:reply of b"}));
  EXPECT_TRUE(queue.empty());
  EXPECT_TRUE(queue.TakeExpired(1000).empty());  // b was answered: never twice
}

TEST(CommandQueueTest, SilenceIsMeasuredFromTheLaterOfTheOldestCommandAndTheLastByte) {
  CommandQueue queue(100, 300);
  Answers answers;
  EXPECT_FALSE(queue.SilentTooLong(10000));  // nothing waits: an idle server is fine
  EXPECT_EQ(queue.NextDue(), UINT64_MAX);
  Push(queue, answers.For("a"), 1000);
  EXPECT_EQ(queue.NextDue(), 1100u);
  queue.TakeExpired(1100);
  EXPECT_EQ(queue.NextDue(), 1300u);  // only the liveness bound is left
  EXPECT_FALSE(queue.SilentTooLong(1299));
  queue.HeardFromServer(1200);  // a partial reply: alive
  EXPECT_FALSE(queue.SilentTooLong(1300));
  EXPECT_EQ(queue.NextDue(), 1500u);
  EXPECT_TRUE(queue.SilentTooLong(1500));
}

TEST(CommandQueueTest, ALostConnectionTellsWrittenAndUnwrittenCommandsApart) {
  CommandQueue queue(0, 0);
  Answers answers;
  Push(queue, answers.For("written"), 0);
  std::vector<std::string> bytes = queue.TakeUnwritten();
  ASSERT_EQ(bytes.size(), 1u);
  EXPECT_EQ(bytes[0], "*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n");
  Push(queue, answers.For("unwritten"), 0);
  EXPECT_EQ(queue.unwritten_bytes(), bytes[0].size());
  EXPECT_EQ(queue.NextDue(), UINT64_MAX);  // timeout 0: no deadline
  for (auto& [callback, status] :
       queue.TakeAll(Status(Code::kTimeout, "may have run"), Status(Code::kUnavailable, "not"))) {
    callback(status, Reply{});
  }
  EXPECT_EQ(answers.got, (std::vector<std::string>{"written:timeout", "unwritten:unavailable"}));
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.unwritten_bytes(), 0u);
  CommandQueue::Callback none;
  EXPECT_FALSE(queue.PopReply(&none));
}

TEST(CommandQueueTest, CommandsWithoutAReplyOrADeadlineAreNotWaitedFor) {
  CommandQueue queue(100, 300);
  Answers answers;
  CommandQueue::Callback none;
  ASSERT_TRUE(queue.Push({"SUBSCRIBE", "ch"}, none, 0));  // subscriber mode: no reply
  EXPECT_TRUE(queue.empty());
  CommandQueue::Callback handshake = answers.For("auth");
  ASSERT_TRUE(queue.Push({"AUTH", "pw"}, handshake, 0, /*with_deadline=*/false));
  EXPECT_FALSE(queue.empty());
  EXPECT_TRUE(queue.TakeExpired(100000).empty());  // bounded by the attempt, not here
  EXPECT_EQ(queue.TakeUnwritten().size(), 2u);
}

}  // namespace
}  // namespace singleflight::internal

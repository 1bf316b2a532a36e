#include "singleflight/status.h"

#include <gtest/gtest.h>

#include "singleflight/result.h"

namespace singleflight {
namespace {

TEST(Status, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "ok");
}

TEST(Status, ToStringNamesTheCode) {
  Status s(Code::kProducerError, "boom");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "producer_error: boom");
}

TEST(Source, NamesAreStable) {
  EXPECT_EQ(SourceName(Source::kPubSub), "pubsub");
  EXPECT_EQ(SourceName(Source::kLocalCache), "l1");
}

}  // namespace
}  // namespace singleflight

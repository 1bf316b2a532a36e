#include "key_naming.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace singleflight::internal {
namespace {

using namespace std::string_literals;

// The part of a key that Redis Cluster hashes: the bytes between the first
// '{' and the first '}' after it, if that is non-empty; else the whole key.
std::string HashTag(const std::string& key) {
  size_t open = key.find('{');
  if (open == std::string::npos) return key;
  size_t close = key.find('}', open + 1);
  if (close == std::string::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

TEST(KeyNaming, NamesTheThreeKeysOfAFlight) {
  FlightKeys keys = NameFlight("sf:", "user:42");
  EXPECT_EQ(keys.lock, "sf:{user:42}:lock");
  EXPECT_EQ(keys.result, "sf:{user:42}:result");
  EXPECT_EQ(keys.channel, "sf:{user:42}:ch");
}

TEST(KeyNaming, InvalidationChannelIsOnePerPrefix) {
  EXPECT_EQ(InvalidationChannel("sf:"), "sf:invalidate");
  EXPECT_EQ(InvalidationChannel("app1:"), "app1:invalidate");
}

TEST(KeyNaming, EscapesExactlyPercentAndBraces) {
  EXPECT_EQ(EscapeKey("a{b}c%d"), "a%7Bb%7Dc%25d");
  EXPECT_EQ(EscapeKey("plain:key/with spaces"), "plain:key/with spaces");
  EXPECT_EQ(EscapeKey("%7B"), "%257B");
}

TEST(KeyNaming, BinaryKeysPassThrough) {
  const std::string key = "a\0b\xff\x01"s;
  FlightKeys keys = NameFlight("sf:", key);
  EXPECT_EQ(keys.lock, "sf:{"s + key + "}:lock");
}

TEST(KeyNaming, AFlightsKeysShareOneHashTagWhateverTheKey) {
  for (const std::string& key :
       {"user:42"s, "}"s, "{"s, "{}"s, "}{"s, "a}b{c"s, "%"s, "%7D"s, "\0\xff}"s, "{{{}}}"s}) {
    FlightKeys keys = NameFlight("sf:", key);
    SCOPED_TRACE(key);
    EXPECT_EQ(HashTag(keys.lock), EscapeKey(key));
    EXPECT_EQ(HashTag(keys.result), EscapeKey(key));
    EXPECT_EQ(HashTag(keys.channel), EscapeKey(key));
  }
}

TEST(KeyNaming, DistinctKeysGetDistinctNames) {
  // Keys that an escaping without '%' would confuse.
  const std::string keys[] = {"}", "%7D", "%257D", "%", "%25", "a", "a}:lock", "{a}"};
  std::set<std::string> names;
  for (const auto& key : keys) {
    FlightKeys k = NameFlight("sf:", key);
    names.insert(k.lock);
    names.insert(k.result);
    names.insert(k.channel);
  }
  names.insert(InvalidationChannel("sf:"));
  EXPECT_EQ(names.size(), 3 * std::size(keys) + 1);
}

TEST(KeyNaming, ValidateKeyAcceptsUpToTheLimit) {
  EXPECT_TRUE(ValidateKey("k", 1).ok());
  EXPECT_TRUE(ValidateKey(std::string(1024, 'x'), 1024).ok());
  EXPECT_TRUE(ValidateKey("\0"s, 1024).ok());
}

TEST(KeyNaming, ValidateKeyRejectsEmpty) {
  Status s = ValidateKey("", 1024);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("empty"), std::string::npos) << s.message();
}

TEST(KeyNaming, ValidateKeyRejectsTooLongWithLengthAndLimit) {
  Status s = ValidateKey(std::string(1025, 'x'), 1024);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("1025"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("1024"), std::string::npos) << s.message();
}

TEST(KeyNaming, ValidatePrefixAcceptsPlainPrefixes) {
  EXPECT_TRUE(ValidatePrefix("sf:").ok());
  EXPECT_TRUE(ValidatePrefix("").ok());
  EXPECT_TRUE(ValidatePrefix(std::string(kMaxPrefixBytes, 'p')).ok());
}

TEST(KeyNaming, ValidatePrefixRejectsBraces) {
  EXPECT_EQ(ValidatePrefix("sf{").code(), Code::kInvalidArgument);
  EXPECT_EQ(ValidatePrefix("sf}").code(), Code::kInvalidArgument);
}

TEST(KeyNaming, ValidatePrefixRejectsOverLong) {
  Status s = ValidatePrefix(std::string(kMaxPrefixBytes + 1, 'p'));
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find(std::to_string(kMaxPrefixBytes + 1)), std::string::npos);
}

}  // namespace
}  // namespace singleflight::internal

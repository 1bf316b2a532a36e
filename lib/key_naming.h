// Key naming: how a user key becomes the Redis keys and channels of a flight.
//
// Every process that shares a Redis server must derive the same names, so
// this is part of the wire protocol (docs/protocol.md, "Key and channel
// naming"). The rules are chosen to be easy to re-implement in any language:
//
//   lock    = prefix "{" Escape(key) "}:lock"
//   result  = prefix "{" Escape(key) "}:result"
//   channel = prefix "{" Escape(key) "}:ch"
//   invalidation channel = prefix "invalidate"
//
// Escape() percent-escapes exactly three bytes: '%' -> "%25", '{' -> "%7B",
// '}' -> "%7D"; every other byte (NUL and 0xff included) is copied as is.
// So the first '}' after the first '{' always closes the hash tag that we
// opened, and the three names of one flight hash to one Redis Cluster slot.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "singleflight/status.h"

namespace singleflight::internal {

// A prefix longer than this is refused: it is repeated in every key and
// message, and nobody needs a longer namespace.
inline constexpr size_t kMaxPrefixBytes = 256;

// Ok when the key is non-empty and at most max_key_bytes long; otherwise
// kInvalidArgument with the length and the limit in the message.
Status ValidateKey(std::string_view key, size_t max_key_bytes);

// Ok when the prefix has no '{' or '}' (either would move or close the hash
// tag) and is at most kMaxPrefixBytes long. An empty prefix is allowed.
Status ValidatePrefix(std::string_view prefix);

struct FlightKeys {
  std::string lock;     // the leader's lease: SET NX PX with its token
  std::string result;   // the stored envelope
  std::string channel;  // where the leader publishes the envelope
};

// Names the flight of `key`. Expects a prefix that passed ValidatePrefix and
// a key that passed ValidateKey (an empty key would give an empty hash tag,
// which Redis Cluster ignores).
FlightKeys NameFlight(std::string_view prefix, std::string_view key);

// The one channel on which Forget broadcasts; its payload is the raw key.
std::string InvalidationChannel(std::string_view prefix);

// The escaping used inside the hash tag; exposed for tests and tools.
std::string EscapeKey(std::string_view key);

}  // namespace singleflight::internal

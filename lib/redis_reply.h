// Reply: a Redis reply copied out of hiredis, so that it can outlive the
// hiredis callback and so that the code above the connection layer never sees
// a hiredis type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace singleflight::internal {

struct Reply {
  enum class Type { kNil, kString, kStatus, kError, kInteger, kArray };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  long long integer = 0;
  std::vector<Reply> elements;  // kArray

  bool is_error() const { return type == Type::kError; }
  bool is_nil() const { return type == Type::kNil; }
};

}  // namespace singleflight::internal

// Builds Redis reply trees of arbitrary shape from fuzz bytes: arrays of
// strings, status, errors, integers and nils, nested a few levels. Strings are
// drawn from the words the code under test looks for (so the fuzzer reaches
// the interesting branches quickly) or are raw bytes.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>

#include <string>
#include <vector>

#include "redis_reply.h"

namespace singleflight::fuzz {

using internal::Reply;

inline Reply Text(Reply::Type type, std::string s) {
  Reply r;
  r.type = type;
  r.str = std::move(s);
  return r;
}

inline Reply Integer(long long v) {
  Reply r;
  r.type = Reply::Type::kInteger;
  r.integer = v;
  return r;
}

inline Reply Array(std::vector<Reply> elements) {
  Reply r;
  r.type = Reply::Type::kArray;
  r.elements = std::move(elements);
  return r;
}

inline std::string ConsumeWord(FuzzedDataProvider& in, const std::vector<std::string>& words) {
  if (words.empty() || in.ConsumeBool()) return in.ConsumeRandomLengthString(64);
  return words[in.ConsumeIntegralInRange<size_t>(0, words.size() - 1)];
}

inline Reply ConsumeReply(FuzzedDataProvider& in, const std::vector<std::string>& words,
                          int depth = 0) {
  constexpr int kMaxDepth = 3;
  constexpr size_t kMaxElements = 6;
  switch (in.ConsumeIntegralInRange<int>(0, depth < kMaxDepth ? 5 : 4)) {
    case 0: return Reply{};
    case 1: return Text(Reply::Type::kString, ConsumeWord(in, words));
    case 2: return Text(Reply::Type::kStatus, ConsumeWord(in, words));
    case 3: return Text(Reply::Type::kError, ConsumeWord(in, words));
    case 4: return Integer(in.ConsumeIntegral<long long>());
    default: {
      std::vector<Reply> elements(in.ConsumeIntegralInRange<size_t>(0, kMaxElements));
      for (Reply& element : elements) element = ConsumeReply(in, words, depth + 1);
      return Array(std::move(elements));
    }
  }
}

}  // namespace singleflight::fuzz

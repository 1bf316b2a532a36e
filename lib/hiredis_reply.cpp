#include "hiredis_reply.h"

namespace singleflight::internal {

Reply ToReply(const redisReply* reply) {
  Reply out;
  if (reply == nullptr) return out;
  switch (reply->type) {
    case REDIS_REPLY_STRING: out.type = Reply::Type::kString; break;
    case REDIS_REPLY_STATUS: out.type = Reply::Type::kStatus; break;
    case REDIS_REPLY_ERROR: out.type = Reply::Type::kError; break;
    case REDIS_REPLY_INTEGER: out.type = Reply::Type::kInteger; break;
    case REDIS_REPLY_ARRAY: out.type = Reply::Type::kArray; break;
    default: out.type = Reply::Type::kNil; break;
  }
  if (out.type == Reply::Type::kString || out.type == Reply::Type::kStatus ||
      out.type == Reply::Type::kError) {
    out.str.assign(reply->str, reply->len);
  } else if (out.type == Reply::Type::kInteger) {
    out.integer = reply->integer;
  } else if (out.type == Reply::Type::kArray) {
    out.elements.reserve(reply->elements);
    for (size_t i = 0; i < reply->elements; ++i) out.elements.push_back(ToReply(reply->element[i]));
  }
  return out;
}

}  // namespace singleflight::internal

// Text helpers for the HTTP examples: percent-encoding and JSON strings.
#pragma once

#include <string>
#include <string_view>

namespace examples {

// Decodes %XX and '+' (as in a query string). False on a malformed escape.
bool UrlDecode(std::string_view in, std::string* out);

// Encodes everything but unreserved characters (RFC 3986), for a query value.
std::string UrlEncode(std::string_view in);

// The value of `name` in a query string "a=1&b=2", decoded. False if absent
// or malformed.
bool QueryParam(std::string_view query, std::string_view name, std::string* value);

// A JSON string literal, quotes included. Bytes >= 0x80 pass through, so
// UTF-8 stays UTF-8; control characters are escaped.
std::string JsonString(std::string_view in);

}  // namespace examples

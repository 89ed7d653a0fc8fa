// Status and StatusOr: the result of an operation that can fail in an expected way (network,
// disk, a peer's bad bytes, a user's bad Dockerfile, a failed build). A broken invariant is not a
// Status: it aborts through SF_CHECK.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace stagefarm {

// Codes follow abseil's; the comment says whether a caller should retry.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,           // the caller gave up; don't retry
  kUnknown = 2,
  kInvalidArgument = 3,     // bad input (Dockerfile, flags, peer bytes); don't retry
  kDeadlineExceeded = 4,    // timed out; retry may succeed
  kNotFound = 5,            // don't retry
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,   // out of quota/space; retry later
  kFailedPrecondition = 9,  // system not in the state needed; don't retry until it is fixed
  kAborted = 10,            // concurrency conflict; retry the whole sequence
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,        // transient (peer down, connection lost); retry with backoff
  kDataLoss = 15,           // corrupted data (wrong digest); don't retry
};

std::string_view StatusCodeName(StatusCode code);

// A null pointer means OK, so an OK Status costs one pointer and moves are cheap (leveldb).
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message);
  Status(const Status& other) { *this = other; }
  Status& operator=(const Status& other) {
    rep_ = other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr;
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }
  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  const std::string& message() const;
  // "NotFound: no stage named build", or "OK".
  std::string ToString() const;
  // The same code with "context: " prepended to the message.
  Status Annotate(std::string_view context) const;
  // Drops an error on purpose; the call site says why.
  void IgnoreError() const {}

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

inline bool operator==(const Status& a, const Status& b) {
  return a.code() == b.code() && a.message() == b.message();
}

Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status AlreadyExistsError(std::string message);
Status FailedPreconditionError(std::string message);
Status UnavailableError(std::string message);
Status InternalError(std::string message);
Status DataLossError(std::string message);
Status DeadlineExceededError(std::string message);
Status CancelledError(std::string message);
Status UnimplementedError(std::string message);
Status ResourceExhaustedError(std::string message);
Status OutOfRangeError(std::string message);
Status PermissionDeniedError(std::string message);
// An error from a failed system call: saves errno's text. `what` names the call and its objects,
// e.g. "mount overlay on /var/lib/x".
Status ErrnoError(std::string_view what, int err);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& s) : v_(s) { Check(); }  // NOLINT: implicit by design
  StatusOr(Status&& s) : v_(std::move(s)) { Check(); }  // NOLINT
  StatusOr(const T& value) : v_(value) {}  // NOLINT
  StatusOr(T&& value) : v_(std::move(value)) {}  // NOLINT

  bool ok() const { return v_.index() == 1; }
  Status status() const { return ok() ? Status() : std::get<0>(v_); }
  T& value() & { CheckOk(); return std::get<1>(v_); }
  const T& value() const& { CheckOk(); return std::get<1>(v_); }
  T&& value() && { CheckOk(); return std::get<1>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void Check() const {
    if (std::get<0>(v_).ok()) {
      std::fprintf(stderr, "StatusOr constructed from an OK status\n");
      std::abort();
    }
  }
  void CheckOk() const {
    if (!ok()) {
      std::fprintf(stderr, "StatusOr::value() on error: %s\n", std::get<0>(v_).ToString().c_str());
      std::abort();
    }
  }
  std::variant<Status, T> v_;
};

}  // namespace stagefarm

// Aborts with file:line when an invariant is broken. Not for expected failures.
#define SF_CHECK(cond)                                                                   \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#define SF_CONCAT_INNER(a, b) a##b
#define SF_CONCAT(a, b) SF_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if it is not OK.
#define SF_RETURN_IF_ERROR(expr)            \
  do {                                      \
    ::stagefarm::Status sf_status_ = (expr); \
    if (!sf_status_.ok()) return sf_status_; \
  } while (0)

// SF_ASSIGN_OR_RETURN(auto x, Foo()); declares x from a StatusOr or returns its error.
#define SF_ASSIGN_OR_RETURN(lhs, expr) \
  SF_ASSIGN_OR_RETURN_IMPL(SF_CONCAT(sf_statusor_, __LINE__), lhs, expr)
#define SF_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

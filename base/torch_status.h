// LibTorch reports failures by throwing c10::Error; nanoserve's libraries
// return absl::Status. RunTorch is the one place where the first becomes the
// second, so every library edge maps LibTorch errors the same way:
//   out of memory (c10::OutOfMemoryError, std::bad_alloc) -> RESOURCE_EXHAUSTED
//   any other c10::Error or std::exception                  -> INTERNAL
// with "<what>: <message>" (no backtrace) as the message.
//
// It lives in the KV store library because that is the lowest library that
// links LibTorch; the engine and the services use it too.
//
// Thread safety: stateless.
#ifndef NANOSERVE_BASE_TORCH_STATUS_H_
#define NANOSERVE_BASE_TORCH_STATUS_H_

#include <optional>
#include <type_traits>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nanoserve {

namespace torch_status_internal {
template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};
}  // namespace torch_status_internal

// Runs `body`; OK if it returns normally, else the mapped error above.
absl::Status RunTorch(absl::string_view what, absl::FunctionRef<void()> body);

// Runs `body` and returns its result, or the mapped error. A body that
// returns absl::Status or absl::StatusOr<T> has its own error passed through.
template <typename F>
auto TorchResult(absl::string_view what, F&& body) {
  using R = std::invoke_result_t<F>;
  if constexpr (std::is_same_v<R, absl::Status>) {
    absl::Status out;
    absl::Status thrown = RunTorch(what, [&] { out = body(); });
    return thrown.ok() ? out : thrown;
  } else {
    using Out =
        std::conditional_t<torch_status_internal::IsStatusOr<R>::value, R, absl::StatusOr<R>>;
    std::optional<R> out;
    absl::Status thrown = RunTorch(what, [&] { out.emplace(body()); });
    if (!thrown.ok()) return Out(thrown);
    return Out(*std::move(out));
  }
}

}  // namespace nanoserve

#endif  // NANOSERVE_BASE_TORCH_STATUS_H_

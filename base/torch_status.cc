#include "base/torch_status.h"

#include <exception>
#include <new>

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"

namespace nanoserve {

absl::Status RunTorch(absl::string_view what, absl::FunctionRef<void()> body) {
  try {
    body();
    return absl::OkStatus();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace nanoserve

// Exported memory on the CPU: a shared-memory segment that a second mapping
// (as another process would make) sees and changes, refused when it is not
// the segment of the epoch asked for, unlinked when the exporter frees it;
// and a page pool allocated in it.
#include "kv_cache/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <gtest/gtest.h>

#include "kv_cache/page_pool.h"

namespace nanoserve {
namespace shared_memory_test {

bool SegmentExists(const std::string& name) {
  const int fd = shm_open(name.c_str(), O_RDONLY, 0);
  if (fd < 0) return false;
  close(fd);
  return true;
}

TEST(SharedMemoryTest, ASecondMappingSeesAndChangesTheSameMemory) {
  const uint64_t epoch = NewEpoch();
  auto exported = AllocateExported({4, 8}, torch::kFloat, torch::kCPU, epoch);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(exported->segment.transport, KvTransport::kShm);
  EXPECT_EQ(exported->segment.bytes, 4 * 8 * 4);
  EXPECT_TRUE(torch::equal(exported->tensor, torch::zeros({4, 8})));

  auto mapped = MapExported(exported->segment, {4, 8}, torch::kFloat, torch::kCPU, epoch);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  exported->tensor[1].fill_(3.0);
  EXPECT_TRUE(torch::equal((*mapped)[1], torch::full({8}, 3.0)));
  (*mapped)[2].fill_(5.0);
  EXPECT_TRUE(torch::equal(exported->tensor[2], torch::full({8}, 5.0)));
}

TEST(SharedMemoryTest, TheWrongEpochSizeOrNameIsRefused) {
  const uint64_t epoch = NewEpoch();
  auto exported = AllocateExported({16}, torch::kFloat, torch::kCPU, epoch).value();
  const SharedSegment& segment = exported.segment;
  EXPECT_EQ(MapExported(segment, {16}, torch::kFloat, torch::kCPU, epoch + 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(MapExported(segment, {8}, torch::kFloat, torch::kCPU, epoch).status().code(),
            absl::StatusCode::kFailedPrecondition);
  SharedSegment missing = segment;
  missing.shm_name = "/nanoserve-kv-no-such-segment";
  EXPECT_EQ(MapExported(missing, {16}, torch::kFloat, torch::kCPU, epoch).status().code(),
            absl::StatusCode::kFailedPrecondition);
  SharedSegment path = segment;
  path.shm_name = "/../etc/passwd";
  EXPECT_EQ(MapExported(path, {16}, torch::kFloat, torch::kCPU, epoch).status().code(),
            absl::StatusCode::kFailedPrecondition);
  SharedSegment none;
  EXPECT_EQ(MapExported(none, {16}, torch::kFloat, torch::kCPU, epoch).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SharedMemoryTest, TheSegmentIsUnlinkedWhenTheExporterFreesIt) {
  std::string name;
  torch::Tensor mapped;
  {
    const uint64_t epoch = NewEpoch();
    auto exported = AllocateExported({16}, torch::kFloat, torch::kCPU, epoch).value();
    name = exported.segment.shm_name;
    EXPECT_TRUE(SegmentExists(name));
    mapped = MapExported(exported.segment, {16}, torch::kFloat, torch::kCPU, epoch).value();
    exported.tensor.fill_(2.0);
  }
  EXPECT_FALSE(SegmentExists(name));
  // A mapping made before stays readable until it is dropped.
  EXPECT_TRUE(torch::equal(mapped, torch::full({16}, 2.0)));
}

TEST(SharedMemoryTest, AnExportedPoolLivesInASegmentAndStartsAsZeros) {
  PagePoolOptions o;
  o.layout.page_size = 4;
  o.layout.n_layer = 2;
  o.layout.n_head = 2;
  o.layout.head_dim = 3;
  o.byte_budget = 5 * o.layout.bytes_per_page();
  o.exported = true;
  o.epoch = NewEpoch();
  auto pool = PagePool::Create(o);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->segment().transport, KvTransport::kShm);
  EXPECT_EQ((*pool)->segment().bytes, 5 * o.layout.bytes_per_page());
  EXPECT_EQ((*pool)->storage().sizes().vec(), o.layout.shape(5));
  EXPECT_EQ((*pool)->storage().count_nonzero().item<int64_t>(), 0);
  o.exported = false;
  EXPECT_EQ(PagePool::Create(o).value()->segment().transport, KvTransport::kBytes);
}

TEST(SharedMemoryTest, HostIdAndEpochs) {
  EXPECT_FALSE(HostId().empty());
  EXPECT_EQ(HostId(), HostId());
  EXPECT_NE(NewEpoch(), 0u);
  EXPECT_NE(NewEpoch(), NewEpoch());
}

}  // namespace shared_memory_test
}  // namespace nanoserve

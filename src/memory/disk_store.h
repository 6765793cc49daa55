// The disk tier of TableStore: rows read explicitly from the file into a row
// cache with a byte budget and LRU eviction. A cache entry holds all M rows of
// one id (one read for a row-major packed file, M reads otherwise). Reads go
// through io_uring, batched up to StoreOptions::io_depth in flight, when the
// kernel allows it, else through pread. Only TableStore::open calls this.
#pragma once

#include <memory>

#include "memory/table_store.h"

namespace stem::memory {

Result<std::unique_ptr<TableStore>> open_disk_store(const TableFileLayout& layout,
                                                    const StoreOptions& opt);

}  // namespace stem::memory

// The accounting of include/stem/accounting.h under the model layer's names.
#pragma once

#include "stem/accounting.h"

namespace stem::model {
using stem::Account;
using stem::account;
using stem::attention_flops;
using stem::LayerAccount;
}  // namespace stem::model

// flowkit/flowkit.h — everything a plugin needs, in one include.
#pragma once
#include "flowkit/config.h"
#include "flowkit/domain.h"
#include "flowkit/error.h"
#include "flowkit/loss.h"
#include "flowkit/model.h"
#include "flowkit/path.h"
#include "flowkit/plugin.h"
#include "flowkit/registry.h"
#include "flowkit/solver.h"
#include "flowkit/tensor_map.h"
#include "flowkit/version.h"

// flowkit/registry.h — where a plugin registers its component factories.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "flowkit/component.h"
#include "flowkit/config.h"

namespace flowkit {

class Domain;
class Path;
class Model;

// What a factory may use while building its component. Components are built in the order
// of flowkit::kinds(); a component that needs another (a model needs the domain's data
// shape, a loss needs the path) reads it here and throws a ConfigError when it is absent.
struct BuildContext {
  std::string device = "cpu";        // torch device string, e.g. "cpu", "cuda:0"
  Domain* domain = nullptr;
  const Path* path = nullptr;
  Model* model = nullptr;
  // The folder holding the building plugin's plugin.json and library (its data/ lives there).
  std::string plugin_dir;
  // Builds another component from a `{"type": ...}` config (a wrapper builds its inner model).
  std::function<std::unique_ptr<Component>(Kind, const Config&)> build;
};

using Factory = std::function<std::unique_ptr<Component>(const Config&, const BuildContext&)>;

// Implemented by the host. `name` is the component's short name; the host prefixes the
// plugin name ("standard" + "mlp" -> "standard.mlp").
class Registry {
 public:
  virtual ~Registry();
  virtual void add(Kind kind, const std::string& name, Factory factory) = 0;
};

}  // namespace flowkit

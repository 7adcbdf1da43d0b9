// Ground-truth driver for several live migrations at once in SimGrid (issue 15, item 3).
//
// Builds a platform from the command line (hosts, links, routes of links in order, as a SimGrid
// platform file declares them), creates one VM per --vm on its source host, starts every migration
// at the same simulated time (plus the VM's own offset) from its own actor, and prints one JSON
// record: the inputs and, per VM, the migration's start, end, duration, downtime, stage-2 rounds and
// the bytes of each stage message. Each VM's line "VMx migrated: SRC->DST in T s" is also printed on
// stderr in the format of SimGrid's cloud-migration example, so its .tesh output can be compared.
//
// Only the public SimGrid API is used; no SimGrid code is copied here. Observation method, as in
// migrate.cpp: s4u::Comm::on_send on the plugin's "__mbox_mig_src_dst:<vm>(<src>-<dst>)" mailboxes
// (clock and simulated size of each stage message), VirtualMachine::on_suspend / on_resume (stage 3
// starts / the VM runs on the destination), and the duration of the sg_vm_migrate call.
//
// Usage:
//   migrate_many --host=NAME:SPEED ... --link=NAME:BW:LAT[:SHARED|FATPIPE] ...
//                --route=SRC:DST:L1,L2,... ...
//                --vm=NAME:SRC:DST:RAM_BYTES[:MIG_SPEED:INTENSITY[:OFFSET]] ...
//                [--start-delay=S] [--cfg=...] [--log=...]
//   BW in bytes/s, LAT and OFFSET in seconds, SPEED in flop/s. Routes are symmetrical (SimGrid's
//   default). A VM without MIG_SPEED is created as in the cloud-migration example (create_vm, idle,
//   SimGrid's defaults: no migration speed, intensity 0); with MIG_SPEED and INTENSITY it is created
//   with sg_vm_create_migratable and kept busy by one long execute(), as in migrate.cpp.

#include <simgrid/plugins/live_migration.h>
#include <simgrid/s4u.hpp>
#include <simgrid/s4u/VirtualMachine.hpp>
#include <simgrid/version.h>
#include <xbt/config.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace sg4 = simgrid::s4u;

XBT_LOG_NEW_DEFAULT_CATEGORY(mig_many, "pagesync-sim SimGrid concurrent-migration driver");

namespace {
struct HostSpec {
  std::string name;
  double speed;
};
struct LinkSpec {
  std::string name;
  double bw, lat;
  std::string sharing;
};
struct RouteSpec {
  std::string src, dst;
  std::vector<std::string> links;
};
struct Send {
  double t, bytes;
  bool suspended;
};
struct VmSpec {
  std::string name, src, dst;
  double ram = 0, mig_speed = -1, intensity = 0, offset = 0;
  // observed
  sg4::VirtualMachine* vm = nullptr;
  double t_start = -1, t_end = -1, t_suspend = -1, t_resume = -1;
  std::vector<Send> sends;
};

std::vector<HostSpec> g_hosts;
std::vector<LinkSpec> g_links;
std::vector<RouteSpec> g_routes;
std::vector<VmSpec> g_vms;
double g_start_delay = 0;
const std::string MBOX = "__mbox_mig_src_dst:";

std::vector<std::string> split(const std::string& s, char sep)
{
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    out.push_back(item);
  return out;
}

[[noreturn]] void usage(const std::string& what)
{
  fprintf(stderr, "migrate_many: %s\n", what.c_str());
  exit(2);
}

double number(const std::string& s, const std::string& where)
{
  char* end = nullptr;
  double v  = strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0')
    usage("not a number '" + s + "' in " + where);
  return v;
}

void parse(int argc, char** argv)
{
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto eq       = a.find('=');
    if (eq == std::string::npos)
      usage("unknown argument " + a);
    std::string key = a.substr(0, eq), val = a.substr(eq + 1);
    auto f          = split(val, ':');
    if (key == "--host") {
      if (f.size() != 2)
        usage("--host=NAME:SPEED, got " + val);
      g_hosts.push_back({f[0], number(f[1], a)});
    } else if (key == "--link") {
      if (f.size() != 3 && f.size() != 4)
        usage("--link=NAME:BW:LAT[:SHARING], got " + val);
      g_links.push_back({f[0], number(f[1], a), number(f[2], a), f.size() == 4 ? f[3] : "SHARED"});
    } else if (key == "--route") {
      if (f.size() != 3)
        usage("--route=SRC:DST:L1,L2,..., got " + val);
      g_routes.push_back({f[0], f[1], split(f[2], ',')});
    } else if (key == "--vm") {
      if (f.size() != 4 && f.size() != 6 && f.size() != 7)
        usage("--vm=NAME:SRC:DST:RAM[:MIG_SPEED:INTENSITY[:OFFSET]], got " + val);
      VmSpec v;
      v.name = f[0];
      v.src  = f[1];
      v.dst  = f[2];
      v.ram  = number(f[3], a);
      if (f.size() >= 6) {
        v.mig_speed = number(f[4], a);
        v.intensity = number(f[5], a);
      }
      if (f.size() == 7)
        v.offset = number(f[6], a);
      g_vms.push_back(v);
    } else if (key == "--start-delay") {
      g_start_delay = number(val, a);
    } else {
      usage("unknown argument " + a);
    }
  }
  if (g_vms.empty())
    usage("no --vm given");
}

VmSpec* vm_of_mailbox(const std::string& mbox)
{
  // "__mbox_mig_src_dst:<vm>(<src>-<dst>)"
  std::string rest = mbox.substr(MBOX.size());
  std::string name = rest.substr(0, rest.find('('));
  for (auto& v : g_vms)
    if (v.name == name)
      return &v;
  return nullptr;
}

VmSpec* spec_of(const sg4::VirtualMachine& vm)
{
  for (auto& v : g_vms)
    if (v.vm == &vm)
      return &v;
  return nullptr;
}

void migrate(VmSpec* v, sg4::Host* dst)
{
  sg4::this_actor::sleep_for(g_start_delay + v->offset);
  const sg4::Host* src = v->vm->get_pm();
  v->t_start           = sg4::Engine::get_clock();
  sg_vm_migrate(v->vm, dst);
  v->t_end = sg4::Engine::get_clock();
  // the example's own line (s4u-cloud-migration.cpp: "%s migrated: %s->%s in %g s")
  fprintf(stderr, "[%10.6f] %s migrated: %s->%s in %g s\n", v->t_end, v->vm->get_cname(), src->get_cname(),
          dst->get_cname(), v->t_end - v->t_start);
}

void busy(double flops)
{
  sg4::this_actor::execute(flops);
}

void jstr(const char* k, const std::string& v, bool comma = true)
{
  printf("\"%s\": \"%s\"%s", k, v.c_str(), comma ? ", " : "");
}
void jnum(const char* k, double v, bool comma = true)
{
  printf("\"%s\": %.17g%s", k, v, comma ? ", " : "");
}

void print_json()
{
  printf("{");
  printf("\"simgrid_version\": \"%d.%d.%d\", ", SIMGRID_VERSION_MAJOR, SIMGRID_VERSION_MINOR, SIMGRID_VERSION_PATCH);
  jstr("network_model", simgrid::config::get_value<std::string>("network/model"));
  jnum("latency_factor", simgrid::config::get_value<double>("network/latency-factor"));
  jnum("bandwidth_factor", simgrid::config::get_value<double>("network/bandwidth-factor"));
  jnum("weight_S", simgrid::config::get_value<double>("network/weight-S"));
  jnum("tcp_gamma", simgrid::config::get_value<double>("network/TCP-gamma"));
  printf("\"crosstraffic\": %s, ", simgrid::config::get_value<bool>("network/crosstraffic") ? "true" : "false");
  jnum("start_delay", g_start_delay);
  printf("\"hosts\": [");
  for (size_t i = 0; i < g_hosts.size(); i++)
    printf("%s{\"name\": \"%s\", \"speed\": %.17g}", i ? ", " : "", g_hosts[i].name.c_str(), g_hosts[i].speed);
  printf("], \"links\": [");
  for (size_t i = 0; i < g_links.size(); i++)
    printf("%s{\"name\": \"%s\", \"bandwidth\": %.17g, \"latency\": %.17g, \"sharing\": \"%s\"}", i ? ", " : "",
           g_links[i].name.c_str(), g_links[i].bw, g_links[i].lat, g_links[i].sharing.c_str());
  printf("], \"routes\": [");
  for (size_t i = 0; i < g_routes.size(); i++) {
    printf("%s{\"src\": \"%s\", \"dst\": \"%s\", \"links\": [", i ? ", " : "", g_routes[i].src.c_str(),
           g_routes[i].dst.c_str());
    for (size_t j = 0; j < g_routes[i].links.size(); j++)
      printf("%s\"%s\"", j ? ", " : "", g_routes[i].links[j].c_str());
    printf("]}");
  }
  printf("], \"vms\": [");
  for (size_t i = 0; i < g_vms.size(); i++) {
    const VmSpec& v = g_vms[i];
    bool ok         = v.t_end >= 0 && v.t_resume >= 0;
    long rounds     = 0;
    for (size_t k = 1; k < v.sends.size(); k++)
      if (not v.sends[k].suspended)
        rounds++;
    printf("%s{", i ? ", " : "");
    jstr("name", v.name);
    jstr("src", v.src);
    jstr("dst", v.dst);
    jnum("ram_bytes", v.ram);
    jnum("mig_speed", v.mig_speed < 0 ? 0 : v.mig_speed);
    jnum("intensity", v.intensity);
    printf("\"busy\": %s, ", v.mig_speed >= 0 ? "true" : "false");
    jnum("offset", v.offset);
    printf("\"completed\": %s, ", ok ? "true" : "false");
    jnum("mig_start", v.t_start);
    jnum("mig_end", v.t_end);
    jnum("total_time", ok ? v.t_end - v.t_start : -1);
    jnum("downtime", ok ? v.t_resume - v.t_suspend : -1);
    jnum("t_suspend", v.t_suspend);
    jnum("t_resume", v.t_resume);
    printf("\"rounds\": %ld, ", rounds);
    printf("\"sends\": [");
    for (size_t k = 0; k < v.sends.size(); k++)
      printf("%s{\"stage\": %d, \"t\": %.17g, \"bytes\": %.17g}", k ? ", " : "",
             k == 0 ? 1 : (v.sends[k].suspended ? 3 : 2), v.sends[k].t, v.sends[k].bytes);
    printf("]}");
  }
  printf("]}\n");
  fflush(stdout);
}
} // namespace

int main(int argc, char** argv)
{
  sg4::Engine e(&argc, argv); // consumes --cfg= and --log= flags
  parse(argc, argv);
  sg_vm_live_migration_plugin_init();

  auto* zone = sg4::create_full_zone("zone0");
  std::map<std::string, sg4::Host*> hosts;
  std::map<std::string, sg4::Link*> links;
  for (auto const& h : g_hosts)
    hosts[h.name] = zone->create_host(h.name, h.speed)->seal();
  for (auto const& l : g_links) {
    auto* link = zone->create_link(l.name, l.bw)->set_latency(l.lat);
    if (l.sharing == "FATPIPE")
      link->set_sharing_policy(sg4::Link::SharingPolicy::FATPIPE);
    else if (l.sharing != "SHARED")
      usage("unknown sharing policy " + l.sharing + " of link " + l.name);
    links[l.name] = link->seal();
  }
  for (auto const& r : g_routes) {
    if (not hosts.count(r.src) || not hosts.count(r.dst))
      usage("route " + r.src + "->" + r.dst + " names an unknown host");
    std::vector<sg4::LinkInRoute> route;
    for (auto const& name : r.links) {
      if (not links.count(name))
        usage("route " + r.src + "->" + r.dst + " names an unknown link " + name);
      route.emplace_back(links[name]);
    }
    zone->add_route(hosts[r.src]->get_netpoint(), hosts[r.dst]->get_netpoint(), nullptr, nullptr, route, true);
  }
  zone->seal();

  for (auto& v : g_vms) {
    if (not hosts.count(v.src) || not hosts.count(v.dst))
      usage("vm " + v.name + " names an unknown host");
    sg4::Host* src = hosts[v.src];
    if (v.mig_speed < 0) { // as the cloud-migration example: create_vm, set_ramsize, start
      v.vm = src->create_vm(v.name, 1);
      v.vm->set_ramsize(static_cast<size_t>(v.ram));
    } else { // as migrate.cpp: a migratable VM with exact speed and intensity, kept busy
      int ram_mib = static_cast<int>(v.ram / 1024.0 / 1024.0);
      v.vm        = sg_vm_create_migratable(src, v.name.c_str(), 1, ram_mib,
                                            static_cast<int>(v.mig_speed / 1024.0 / 1024.0),
                                            static_cast<int>(v.intensity * 100));
      v.vm->set_ramsize(static_cast<size_t>(v.ram));
      sg_vm_set_migration_speed(v.vm, v.mig_speed);
      sg_vm_set_dirty_page_intensity(v.vm, v.intensity);
    }
    v.vm->start();
  }

  sg4::Comm::on_send_cb([](sg4::Comm const& c) {
    if (not c.get_mailbox() || c.get_mailbox()->get_name().rfind(MBOX, 0) != 0)
      return;
    VmSpec* v = vm_of_mailbox(c.get_mailbox()->get_name());
    if (v != nullptr)
      v->sends.push_back({sg4::Engine::get_clock(), c.get_remaining(),
                          v->vm->get_state() == sg4::VirtualMachine::State::SUSPENDED});
  });
  sg4::VirtualMachine::on_suspend_cb([](sg4::VirtualMachine const& vm) {
    if (VmSpec* v = spec_of(vm))
      v->t_suspend = sg4::Engine::get_clock();
  });
  sg4::VirtualMachine::on_resume_cb([](sg4::VirtualMachine const& vm) {
    if (VmSpec* v = spec_of(vm))
      v->t_resume = sg4::Engine::get_clock();
  });

  std::vector<sg4::ActorPtr> workers;
  for (auto& v : g_vms) {
    if (v.mig_speed >= 0)
      workers.push_back(sg4::Actor::create("worker_" + v.name, v.vm, busy, v.vm->get_pm()->get_speed() * 1e9));
    sg4::Actor::create("mig_" + v.name, hosts[v.src], migrate, &v, hosts[v.dst]);
  }
  sg4::Actor::create("reaper", hosts[g_vms[0].src], [&workers] {
    // end the busy workers once every migration is over, so the simulation ends
    for (;;) {
      bool all = true;
      for (auto const& v : g_vms)
        all = all && v.t_end >= 0;
      if (all)
        break;
      sg4::this_actor::sleep_for(1.0);
    }
    for (auto& w : workers)
      w->kill();
  })->daemonize();

  e.run();
  print_json();
  return 0;
}

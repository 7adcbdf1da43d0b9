// Ground-truth driver for pagesync-sim's `simgrid` stop policy.
//
// Builds a two-host platform joined by one link, creates a migratable VM on the
// source host, keeps its single vCPU busy with one long compute task, live-migrates
// it with SimGrid's live-migration plugin (sg_vm_migrate) and prints one JSON
// record on stdout: inputs, migration start/end, total time, downtime, stage-2
// round count and the per-send timeline.
//
// Only the public SimGrid API is used; no SimGrid code is copied here.
// Observation method (SimGrid does not expose stage timings directly):
//   * s4u::Comm::on_send fires when the migration TX actor posts each stage's
//     message on the "__mbox_mig_src_dst:<vm>(<src>-<dst>)" mailbox; we record
//     the simulated clock and the payload size (Activity::get_remaining() of the
//     not-yet-started comm == its simulated size in bytes).
//   * VirtualMachine::on_suspend fires when stage 3 starts (VM paused),
//     VirtualMachine::on_resume fires on the destination when the stage-3 message
//     has been received.  downtime = t_resume - t_suspend.
//   * Send k ends when send k+1 is posted (nothing else consumes simulated time
//     between two sends in the TX actor); the last stage-2 send ends at suspend.
//   * rounds = number of stage-2 sends (sends posted while the VM is running,
//     excluding the first one, which is stage 1).
//
// Usage: migrate --ram-mib=1024 --host-speed=1e9 --bw=125e6 --lat=1e-4
//                --mig-speed=125e6 --intensity=0.5 [--sharing=SHARED|SPLITDUPLEX|FATPIPE]
//                [--start-delay=1] [--max-rounds-listed=60]
//                [--cfg=network/model:LV08|CM02] [other --cfg / --log flags]

#include <simgrid/plugins/live_migration.h>
#include <simgrid/s4u.hpp>
#include <simgrid/s4u/VirtualMachine.hpp>
#include <simgrid/version.h>
#include <xbt/config.hpp>

#include <cinttypes>
#include <csignal>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace sg4 = simgrid::s4u;

XBT_LOG_NEW_DEFAULT_CATEGORY(mig_driver, "pagesync-sim SimGrid migration driver");

namespace {
struct Params {
  int ram_mib            = 1024;
  double host_speed      = 1e9;   // flop/s (one core)
  double bw              = 125e6; // link bandwidth, bytes/s
  double lat             = 1e-4;  // link latency, s
  double mig_speed       = 125e6; // bytes/s; 0 => unset (no rate cap, and dp_rate becomes 0)
  double intensity       = 0.5;   // fraction of mig_speed dirtied per second of full-speed compute
  std::string sharing    = "SHARED";
  double start_delay     = 1.0;   // s of simulated compute before migration starts
  int max_rounds_listed  = 60;
  double stop_at         = -1;    // if > 0: stop the simulation at this simulated time (for runs that would
                                  // only end at SimGrid's 1e7 s migration timeout)
};

struct Send {
  long idx;
  double t_post;
  double size;
  bool vm_suspended;
};

Params P;
sg4::VirtualMachine* g_vm = nullptr;
// Non-converging runs can make tens of millions of sends: keep the first few and a
// ring of the last few, plus running totals.
std::vector<Send> g_first;
std::vector<Send> g_last; // ring buffer
constexpr size_t LAST_KEPT = 6;
long g_nsends = 0, g_rounds = 0;
double g_bytes_total = 0, g_t_first_stage2 = -1;
double g_t_suspend = -1, g_t_resume = -1, g_t_mig_start = -1, g_t_mig_end = -1;
const std::string g_mig_mbox_prefix = "__mbox_mig_src_dst:";

void record_send(double t, double size, bool suspended)
{
  Send x{g_nsends, t, size, suspended};
  if (g_nsends < P.max_rounds_listed)
    g_first.push_back(x);
  if (g_last.size() < LAST_KEPT)
    g_last.push_back(x);
  else
    g_last[g_nsends % LAST_KEPT] = x;
  if (g_nsends > 0 && not suspended) {
    g_rounds++;
    if (g_t_first_stage2 < 0)
      g_t_first_stage2 = t;
  }
  g_bytes_total += size;
  g_nsends++;
}

bool take(const char* arg, const char* key, std::string& out)
{
  size_t n = strlen(key);
  if (strncmp(arg, key, n) == 0 && arg[n] == '=') {
    out = arg + n + 1;
    return true;
  }
  return false;
}

void parse(int argc, char** argv)
{
  for (int i = 1; i < argc; i++) {
    std::string v;
    if (take(argv[i], "--ram-mib", v))
      P.ram_mib = std::stoi(v);
    else if (take(argv[i], "--host-speed", v))
      P.host_speed = std::stod(v);
    else if (take(argv[i], "--bw", v))
      P.bw = std::stod(v);
    else if (take(argv[i], "--lat", v))
      P.lat = std::stod(v);
    else if (take(argv[i], "--mig-speed", v))
      P.mig_speed = std::stod(v);
    else if (take(argv[i], "--intensity", v))
      P.intensity = std::stod(v);
    else if (take(argv[i], "--sharing", v))
      P.sharing = v;
    else if (take(argv[i], "--start-delay", v))
      P.start_delay = std::stod(v);
    else if (take(argv[i], "--stop-at", v))
      P.stop_at = std::stod(v);
    else if (take(argv[i], "--max-rounds-listed", v))
      P.max_rounds_listed = std::stoi(v);
    else {
      fprintf(stderr, "unknown argument %s\n", argv[i]);
      exit(2);
    }
  }
}

void worker()
{
  // Far more work than can finish before the 1e7 s migration timeout.
  sg4::this_actor::execute(P.host_speed * 1e9);
}

void issuer(sg4::Host* dst, sg4::ActorPtr w)
{
  sg4::this_actor::sleep_for(P.start_delay);
  g_t_mig_start = sg4::Engine::get_clock();
  sg_vm_migrate(g_vm, dst);
  g_t_mig_end = sg4::Engine::get_clock();
  w->kill();
}

void jnum(const char* k, double v, bool comma = true)
{
  printf("\"%s\": %.17g%s", k, v, comma ? ", " : "");
}

const Send* find_send(long i)
{
  if (i < static_cast<long>(g_first.size()))
    return &g_first[i];
  for (auto const& x : g_last)
    if (x.idx == i)
      return &x;
  return nullptr;
}

// Prints the JSON record.  Called at the end of a normal run, or from the SIGABRT
// handler when SimGrid aborts (stage-2 timeout at 1e7 s: the RX actor dies on an
// uncaught TimeoutException and SimGrid calls abort()).
void print_json(bool aborted, bool stopped = false)
{
  long n          = g_nsends;
  bool ok         = not aborted && not stopped && g_t_mig_end >= 0 && g_t_resume >= 0 && n >= 2;
  double now      = sg4::Engine::get_clock();
  double t_stage1 = -1, t_stage2 = -1, t_stage3 = -1;
  if (n >= 1) {
    double end1 = g_t_first_stage2 >= 0 ? g_t_first_stage2 : (g_t_suspend >= 0 ? g_t_suspend : now);
    t_stage1    = end1 - g_first[0].t_post;
    t_stage2    = (g_t_suspend >= 0 ? g_t_suspend : now) - end1;
    if (ok)
      t_stage3 = g_t_resume - find_send(n - 1)->t_post;
  }

  printf("{");
  printf("\"simgrid_version\": \"%d.%d.%d\", ", SIMGRID_VERSION_MAJOR, SIMGRID_VERSION_MINOR, SIMGRID_VERSION_PATCH);
  printf("\"network_model\": \"%s\", ", simgrid::config::get_value<std::string>("network/model").c_str());
  jnum("latency_factor", simgrid::config::get_value<double>("network/latency-factor"));
  jnum("bandwidth_factor", simgrid::config::get_value<double>("network/bandwidth-factor"));
  jnum("tcp_gamma", simgrid::config::get_value<double>("network/TCP-gamma"));
  printf("\"crosstraffic\": %s, ", simgrid::config::get_value<bool>("network/crosstraffic") ? "true" : "false");
  printf("\"link_sharing\": \"%s\", ", P.sharing.c_str());
  printf("\"ram_mib\": %d, \"ram_bytes\": %" PRIu64 ", ", P.ram_mib, static_cast<uint64_t>(g_vm->get_ramsize()));
  printf("\"working_set_bytes\": %" PRIu64 ", ", static_cast<uint64_t>(sg_vm_get_working_set_memory(g_vm)));
  jnum("host_speed", P.host_speed);
  jnum("link_bw", P.bw);
  jnum("link_lat", P.lat);
  jnum("mig_speed", P.mig_speed);
  jnum("intensity", P.intensity);
  jnum("max_downtime", sg_vm_get_max_downtime(g_vm));
  printf("\"completed\": %s, ", ok ? "true" : "false");
  printf("\"aborted\": %s, ", aborted ? "true" : "false");
  printf("\"stopped_early\": %s, ", stopped ? "true" : "false");
  jnum("stop_at", P.stop_at);
  jnum("sim_clock_at_exit", now);
  jnum("mig_start", g_t_mig_start);
  jnum("mig_end", g_t_mig_end);
  jnum("total_time", ok ? g_t_mig_end - g_t_mig_start : -1);
  jnum("downtime", ok ? g_t_resume - g_t_suspend : -1);
  jnum("t_suspend", g_t_suspend);
  jnum("t_resume", g_t_resume);
  jnum("stage1_time", t_stage1);
  jnum("stage2_time", t_stage2);
  jnum("stage3_time", t_stage3);
  jnum("ack_time", ok ? g_t_mig_end - g_t_resume : -1);
  printf("\"rounds\": %ld, ", g_rounds);
  printf("\"sends\": %ld, ", n);
  jnum("bytes_sent_total", g_bytes_total);
  jnum("stage3_bytes", ok ? find_send(n - 1)->size : -1);
  // timeline of sends: post time, size, duration (= next post, suspend or resume time minus post time)
  printf("\"send_timeline_abbreviated\": %s, ", (n > P.max_rounds_listed) ? "true" : "false");
  printf("\"send_timeline\": [");
  bool first = true;
  for (long i = 0; i < n; i++) {
    const Send* x = find_send(i);
    if (x == nullptr)
      continue;
    double end      = -1;
    const Send* nxt = find_send(i + 1);
    if (nxt != nullptr)
      end = (nxt->vm_suspended && not x->vm_suspended) ? g_t_suspend : nxt->t_post;
    else if (i + 1 == n)
      end = x->vm_suspended ? g_t_resume : ((aborted || stopped) ? now : -1);
    else if (i + 1 < n && x->idx + 1 == i + 1) // next one not kept
      end = -1;
    printf("%s{\"i\": %ld, \"stage\": %d, \"t\": %.17g, \"bytes\": %.17g, \"dur\": %.17g}", first ? "" : ", ", i,
           i == 0 ? 1 : (x->vm_suspended ? 3 : 2), x->t_post, x->size, end >= 0 ? end - x->t_post : -1);
    first = false;
  }
  printf("]}\n");
  fflush(stdout);
}

void on_abort(int)
{
  print_json(true);
  _exit(3);
}
} // namespace

int main(int argc, char** argv)
{
  sg4::Engine e(&argc, argv); // consumes --cfg= and --log= flags
  parse(argc, argv);

  sg_vm_live_migration_plugin_init();

  /* Platform: one full zone, two hosts, one link, symmetrical route. */
  auto* zone   = sg4::create_full_zone("zone0");
  sg4::Host* s = zone->create_host("src", P.host_speed)->seal();
  sg4::Host* d = zone->create_host("dst", P.host_speed)->seal();
  std::vector<sg4::LinkInRoute> route;
  if (P.sharing == "SPLITDUPLEX") {
    auto* l = zone->create_split_duplex_link("link", P.bw)->set_latency(P.lat)->seal();
    route.emplace_back(l, sg4::LinkInRoute::Direction::UP);
  } else {
    auto* l = zone->create_link("link", P.bw)->set_latency(P.lat);
    if (P.sharing == "FATPIPE")
      l->set_sharing_policy(sg4::Link::SharingPolicy::FATPIPE);
    else if (P.sharing != "SHARED") {
      fprintf(stderr, "unknown sharing policy %s\n", P.sharing.c_str());
      return 2;
    }
    l->seal();
    route.emplace_back(l);
  }
  zone->add_route(s->get_netpoint(), d->get_netpoint(), nullptr, nullptr, route, true);
  zone->seal();

  /* The VM: created the way the plugin expects (working set = 0.9 x RAM), then the
   * migration speed and intensity are overridden with exact double values. */
  int mig_mib = static_cast<int>(P.mig_speed / 1024.0 / 1024.0);
  g_vm        = sg_vm_create_migratable(s, "vm0", 1, P.ram_mib, mig_mib, static_cast<int>(P.intensity * 100));
  sg_vm_set_migration_speed(g_vm, P.mig_speed);
  sg_vm_set_dirty_page_intensity(g_vm, P.intensity);
  g_vm->start();

  sg4::Comm::on_send_cb([](sg4::Comm const& c) {
    if (c.get_mailbox() && c.get_mailbox()->get_name().rfind(g_mig_mbox_prefix, 0) == 0)
      record_send(sg4::Engine::get_clock(), c.get_remaining(),
                  g_vm->get_state() == sg4::VirtualMachine::State::SUSPENDED);
  });
  sg4::VirtualMachine::on_suspend_cb([](sg4::VirtualMachine const&) { g_t_suspend = sg4::Engine::get_clock(); });
  sg4::VirtualMachine::on_resume_cb([](sg4::VirtualMachine const&) { g_t_resume = sg4::Engine::get_clock(); });

  sg4::ActorPtr w = sg4::Actor::create("worker", g_vm, worker);
  sg4::Actor::create("issuer", s, issuer, d, w);
  if (P.stop_at > 0)
    sg4::Actor::create("stopper", s, [] {
      sg4::this_actor::sleep_until(P.stop_at);
      print_json(false, true);
      _exit(4);
    })->daemonize();

  signal(SIGABRT, on_abort);
  e.run();

  print_json(false);
  return 0;
}

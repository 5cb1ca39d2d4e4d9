#!/usr/bin/env ruby
# Peer for "worker, 16 threads": Sidekiq (its launcher, in this process, with
# concurrency 10, its usual default) draining no-op jobs pushed beforehand.
require "json"
require "optparse"

def emit(fields) = puts("BENCH " + JSON.generate(fields))

opts = {ops: 20_000, batches: 100, jobs: 20_000, fork_jobs: 2000, concurrency: 10}
OptionParser.new do |o|
  o.on("--url URL") { |v| opts[:url] = v }
  o.on("--ops N", Integer) { |v| opts[:ops] = v }
  o.on("--batches N", Integer) { |v| opts[:batches] = v }
  o.on("--jobs N", Integer) { |v| opts[:jobs] = v }
  o.on("--fork-jobs N", Integer) { |v| opts[:fork_jobs] = v }
  o.on("--concurrency N", Integer) { |v| opts[:concurrency] = v }
end.parse!
abort "--url is required" unless opts[:url]

begin
  require "sidekiq"
  require "sidekiq/cli"  # server mode: configure_server blocks run
  require "sidekiq/launcher"
rescue LoadError => e
  emit(missing: "ruby-sidekiq is not installed (#{e.message})")
  exit 0
end
$stdout.sync = true
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)  # warnings per call would skew the timing

# Counts finished jobs in this process, so the measurement adds no Redis traffic.
module Done
  @mutex = Mutex.new
  @count = 0
  @all = Queue.new
  class << self
    attr_accessor :target
    def tick
      @mutex.synchronize do
        @count += 1
        @all << true if @count == target
      end
    end
    def wait = @all.pop
  end
end

class NoopJob
  include Sidekiq::Worker
  sidekiq_options retry: false
  def perform(_i) = Done.tick
end

Sidekiq.configure_client { |c| c.redis = {url: opts[:url], size: 2} }
Sidekiq.configure_server do |c|
  c.redis = {url: opts[:url], size: opts[:concurrency] + 5}
  c.options[:concurrency] = opts[:concurrency]
  c.options[:queues] = ["default"]
  c.logger.level = Logger::ERROR
end

Sidekiq.redis(&:flushdb)
jobs = opts[:jobs]
Done.target = jobs
jobs.times.each_slice(1000) { |slice| Sidekiq::Client.push_bulk("class" => NoopJob, "args" => slice.map { |i| [i] }) }

launcher = Sidekiq::Launcher.new(Sidekiq.options)
start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
launcher.run
Done.wait
seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - start
rss_mb = File.read("/proc/self/status")[/VmHWM:\s+(\d+)/, 1].to_i / 1024.0
emit(row: "worker_thread_16", count: jobs, seconds: seconds, metrics: {"peak RSS MB" => rss_mb})
launcher.stop
Sidekiq.redis(&:flushdb)
exit! 0  # do not wait for the heartbeat thread

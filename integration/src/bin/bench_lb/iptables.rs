//! The iptables fallback beside nftables: programming a fresh task namespace (a full
//! sync) and one endpoint change, at 1k, 10k and 30k services of 10 backends, with the
//! nftables backend measured in the same rounds as the baseline. Every iptables change
//! rewrites shoal's chains of the namespace, so its cost follows the number of services.

use super::*;
use shoal_agent::lb::iptables::Iptables;

pub const IPT_PROG_HEADING: &str = "## Load balancer: programming iptables (the fallback)";
/// An iptables change costs about a full sync: fewer rounds than for the fast paths.
const IPT_CHANGES: usize = 6;
const IPT_RUNS: usize = 3;

/// DNAT rules in a namespace's nat table, as iptables-save lists them.
fn dnat_rules(ns: &NetnsGuard) -> Result<usize> {
    let out =
        run(Command::new("ip").args(["netns", "exec", &ns.name, "iptables-save", "-t", "nat"]))?;
    Ok(out.lines().filter(|l| l.contains("-j DNAT")).count())
}

struct Row {
    services: usize,
    ipt_full: Duration,
    nft_full: Duration,
    ipt_change: Spread,
    nft_change: Spread,
}

/// Full sync and one-backend replacements of `lb` at `n` services: (full syncs, changes).
fn measure(
    make: &dyn Fn() -> Box<dyn LbBackend>,
    n: usize,
    runs: usize,
    quiet: &mut Quiet,
    check: &dyn Fn(&NetnsGuard) -> Result<()>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut table = vip_table(n, None);
    let mut full = Vec::new();
    let mut changes = Vec::new();
    for r in 0..runs {
        quiet.wait()?;
        let ns = NetnsGuard::create("ipt")?;
        let lb = make();
        let t = Instant::now();
        let synced = lb.apply_vips(&ns.lb(), &table)?;
        full.push(t.elapsed());
        ensure!(synced == Synced::Full, "first apply_vips gave {synced:?}");
        check(&ns)?;
        if r + 1 < runs {
            continue;
        }
        // Changes on the last instance.
        for k in 0..IPT_CHANGES {
            let v = vip((k * 7919) % n);
            let old = *table.vips[&v].iter().nth(3).expect("backend");
            let new = spare(k);
            let s = table.vips.get_mut(&v).expect("service");
            s.remove(&old);
            s.insert(new);
            let t = Instant::now();
            let synced = lb.apply_vips(&ns.lb(), &table)?;
            changes.push(t.elapsed());
            ensure!(
                matches!(synced, Synced::Incremental { .. }),
                "a change came out as {synced:?}"
            );
            let s = table.vips.get_mut(&v).expect("service");
            s.remove(&new);
            s.insert(old);
            lb.apply_vips(&ns.lb(), &table)?;
        }
        check(&ns)?;
    }
    Ok((full, changes))
}

pub fn programming(runs: usize, header: &str) -> Result<String> {
    Iptables::available().map_err(|e| anyhow!("iptables: {e}"))?;
    let runs = runs.min(IPT_RUNS);
    let mut quiet = Quiet::default();
    let mut rows = Vec::new();
    for n in SIZES {
        let want = n * BACKENDS;
        let ipt_check = |ns: &NetnsGuard| -> Result<()> {
            let got = dnat_rules(ns)?;
            ensure!(got == want, "iptables holds {got} DNAT rules, not {want}");
            Ok(())
        };
        let (ipt_full, ipt_change) = measure(
            &|| Box::new(Iptables::default()),
            n,
            runs,
            &mut quiet,
            &ipt_check,
        )?;
        let (nft_full, nft_change) = measure(
            &|| Box::new(Nftables::default()),
            n,
            runs,
            &mut quiet,
            &|_| Ok(()),
        )?;
        eprintln!(
            "  iptables {n} x {BACKENDS}: full {} change {}; nftables full {} change {}",
            ms(median_d(ipt_full.clone())),
            ms(spread(ipt_change.clone()).p50),
            ms(median_d(nft_full.clone())),
            ms(spread(nft_change.clone()).p50),
        );
        rows.push(Row {
            services: n,
            ipt_full: median_d(ipt_full),
            nft_full: median_d(nft_full),
            ipt_change: spread(ipt_change),
            nft_change: spread(nft_change),
        });
    }
    let mut out = format!(
        "{IPT_PROG_HEADING}\n\n{header} · `bench_lb` (release build); full sync: median of \
         {runs} runs, each the first `apply_vips` of a new backend into a fresh namespace \
         (`iptables-restore --noflush`, one per table; the DNAT rules counted with \
         `iptables-save`); change: {IPT_CHANGES} replacements of one backend of one service, \
         median and p99. nftables is measured in the same rounds, with the same tables, as \
         the baseline.\n\n"
    );
    out.push_str(
        "| services × backends | iptables full sync | nftables full sync | ratio | iptables change | nftables change | ratio |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "| {} × {BACKENDS} | {} | {} | {:.1}× | {} (p99 {}) | {} (p99 {}) | {:.0}× |",
            thousands(r.services),
            ms(r.ipt_full),
            ms(r.nft_full),
            ratio(r.ipt_full, r.nft_full),
            ms(r.ipt_change.p50),
            ms(r.ipt_change.p99),
            ms(r.nft_change.p50),
            ms(r.nft_change.p99),
            ratio(r.ipt_change.p50, r.nft_change.p50),
        );
    }
    let _ = writeln!(
        out,
        "\nRe-run (as root): `target/release/bench_lb --only iptables-programming --write BENCHMARKS.md`."
    );
    Ok(out)
}

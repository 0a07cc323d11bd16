# ppl_bits.gp: Test perplexity vs bits per weight code (runs/tinystories)
# Drawn from runs/tinystories/results/eval.csv by nanogptq's figures tool (data in ppl_bits.dat).
# Redraw by hand: cd into this folder, then: gnuplot ppl_bits.gp
if (!exists("outfile")) outfile = "ppl_bits.png"
set terminal pngcairo size 1000,640 font "sans,11" noenhanced
set output outfile
set datafile missing "NaN"
set grid lc rgb "#d8d8d8"
set title "Test perplexity vs bits per weight code (runs/tinystories)"
set xlabel "bits per weight code (scales and zeros not counted; see size_ppl.png)"
set label 1 "error bars: +/- 1 paired standard error of the difference from the baseline" at graph 0.01, graph -0.13 font ",9"
set bmargin 5
set ylabel "test perplexity (per character)"
set xrange [2.4:8.6]
set xtics 1
set key top right box opaque
set bars 2
base_ppl = 2.771627003
plot base_ppl with lines dt 2 lw 2 lc rgb "#000000" title sprintf("fp32 baseline: %.3f", base_ppl), \
     "ppl_bits.dat" index 0 using 1:2:3:4 with yerrorlines lw 2 pt 5 ps 1.4 dt 1 lc rgb "#d62728" title "naive (RTN), per channel", \
     "ppl_bits.dat" index 1 using 1:2:3:4 with yerrorlines lw 2 pt 5 ps 1.4 dt 2 lc rgb "#ff7f0e" title "naive (RTN), groups of 64", \
     "ppl_bits.dat" index 2 using 1:2:3:4 with yerrorlines lw 2 pt 7 ps 1.4 dt 1 lc rgb "#1f77b4" title "GPTQ, per channel", \
     "ppl_bits.dat" index 3 using 1:2:3:4 with yerrorlines lw 2 pt 7 ps 1.4 dt 2 lc rgb "#17becf" title "GPTQ, groups of 64"

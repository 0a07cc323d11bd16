# size_ppl.gp: Test perplexity vs checkpoint size on disk (runs/tinystories)
# Drawn from runs/tinystories/results/eval.csv by nanogptq's figures tool (data in size_ppl.dat).
# Redraw by hand: cd into this folder, then: gnuplot size_ppl.gp
if (!exists("outfile")) outfile = "size_ppl.png"
set terminal pngcairo size 1000,640 font "sans,11" noenhanced
set output outfile
set datafile missing "NaN"
set grid lc rgb "#d8d8d8"
set title "Test perplexity vs checkpoint size on disk (runs/tinystories)"
set xlabel "checkpoint size on disk (KiB)"
set ylabel "test perplexity (per character)"
set key top right box opaque
set offsets graph 0.1, graph 0.12, graph 0.06, graph 0.06
base_ppl = 2.771627003
plot "size_ppl.dat" index 0 using 1:2 with points pt 9 ps 2 lc rgb "#000000" title "fp32", \
     "size_ppl.dat" index 1 using 1:2 with points pt 5 ps 1.6 lc rgb "#d62728" title "naive (RTN)", \
     "size_ppl.dat" index 2 using 1:2 with points pt 7 ps 1.6 lc rgb "#1f77b4" title "GPTQ", \
     base_ppl with lines dt 2 lw 1 lc rgb "#000000" notitle, \
     "size_ppl.dat" index 0 using 1:2:3 with labels left offset char 0.8,0.6 font ",9" notitle, \
     "size_ppl.dat" index 1 using 1:2:3 with labels right offset char -0.8,0.6 font ",9" notitle, \
     "size_ppl.dat" index 2 using 1:2:3 with labels left offset char 0.8,0.6 font ",9" notitle

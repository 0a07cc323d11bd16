# loss.gp: Training loss vs step (runs/tinystories)
# Drawn from runs/tinystories/train_log.csv by nanogptq's figures tool (data in loss.dat).
# Redraw by hand: cd into this folder, then: gnuplot loss.gp
if (!exists("outfile")) outfile = "loss.png"
set terminal pngcairo size 960,600 font "sans,11" noenhanced
set output outfile
set datafile missing "NaN"
set grid lc rgb "#d8d8d8"
set title "Training loss vs step (runs/tinystories)"
set xlabel "optimizer step"
set ylabel "cross-entropy loss (nats per character)"
set key top right box opaque
plot "loss.dat" index 0 using 1:2 with lines lw 1 lc rgb "#7fa7d8" title "train loss (each step's batch)", \
     "loss.dat" index 1 using 1:2 with linespoints lw 2 pt 7 ps 1.2 lc rgb "#d62728" title "validation loss (fixed windows)"
